"""JSONL extraction records to a Megatron indexed dataset (``OUT.bin`` + ``OUT.idx``).

One document per kept record, in input order, each the record's formatted sample (:mod:`.formats`)
encoded by :meth:`T2CTokenizer.encode_samples` and ending with ``[eoc]`` (megatron-core's end of
document).  Samples longer than ``max_seq_length`` tokens are dropped, as in the paper.

Every input line is accounted for: the summary's ``lines`` equals ``documents`` plus the sum of
``skipped`` (reason -> count).  Lines left out on purpose are ``excluded_by_include`` and ``too_long``;
bad lines (``blank_line invalid_utf8 invalid_json not_an_object missing_field:NAME wrong_type:NAME
normalise_error empty_code invalid_text``) are also printed with their line numbers (the first few) and
with ``strict`` the first one stops the run.

Pipeline: the parent cuts the input into blocks of whole lines (byte ranges of a file, which the workers
read themselves; the bytes themselves for a pipe or FIFO) and hands them to ``workers`` forked processes,
each holding its own tokenizer.  A worker reads, parses, formats and batch-encodes its block
(:class:`ChunkEncoder`) and returns one token array with the document lengths and line numbers.  The
parent only writes, a block at a time and in input order, through megatron-core's
``IndexedDatasetBuilder``.  Outputs go to temporary files beside the targets and are renamed into place
only when everything succeeded (``.idx`` last), so an error, ``Ctrl-C`` or ``SIGTERM`` leaves
pre-existing outputs untouched and no partial or temporary files behind.

With ``workers == 1`` everything runs in this process; the output is byte-identical for any number of
workers and any block size.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import signal
import stat
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter, deque
from dataclasses import dataclass
from typing import IO, Iterable, Iterator, NamedTuple

import numpy as np

from .atomic import write_json
from .cli import option
from .formats import FORMATS, INCLUDE, format_code
from .normalise import normalise
from .records import (BadLine, LineReport, iter_line_blocks, iter_line_ranges, parse_record, read_range,
                      split_lines)
from .tokenizer import T2CTokenizerCore


@dataclass(kw_only=True)
class PreprocessConfig:
    """What to convert and how."""

    input: str = option(help="JSONL file of extraction records (tools/extract_functions.py); a FIFO works",
                        metavar="FILE.jsonl")
    tokenizer_model: str = option(help="SentencePiece model from tools/train_tokenizer.py", metavar="P.model")
    output_prefix: str = option(help="write OUT.bin and OUT.idx", metavar="OUT")
    format: str = option("pangu", "sample format", choices=FORMATS)
    include: str = option("text-code", "records to keep: with a docstring, without, or all", choices=INCLUDE)
    max_seq_length: int = option(1024, "drop samples longer than this many tokens ([eoc] included)")
    workers: int = option(1, "encoding processes (1: everything in this process)")
    summary: str | None = option(None, "write a JSON summary (counts, skipped lines by reason, timings)",
                                 metavar="FILE.json")
    index_map: str | None = option(None, "write the 1-based input line number of every document, one a line",
                                   metavar="FILE")
    strict: bool = option(False, "stop at the first bad input line (exit status 1)")
    chunk_bytes: int = option(1 << 20, "input bytes per work item")
    show_bad: int = option(10, "print at most this many bad lines in full")
    progress: bool = option(True, "show a progress bar on stderr")


class StrictError(RuntimeError):
    """A bad input line under ``strict``."""


class Chunk(NamedTuple):
    """A worker's result for one block of lines."""

    tokens: np.ndarray  # the kept documents' ids, concatenated, in the output dtype
    lengths: np.ndarray  # tokens per kept document (int64)
    line_numbers: np.ndarray  # line of every kept document, counted from 0 at the block's first (int64)
    n_lines: int  # lines in the block
    n_bytes: int  # bytes in the block
    skipped: dict  # reason -> count for lines left out on purpose
    bad: list  # (line, reason, detail) of every bad line in line order, lines counted as above


#: A block of whole lines: its bytes, or its ``(offset, length)`` in the input file.
Block = bytes | tuple[int, int]


class ChunkEncoder:
    """Read, parse, select, format and encode a block of JSONL lines (a worker's whole job)."""

    def __init__(self, input_path: str, model_path: str, fmt: str, include: str, max_seq_length: int,
                 dtype: type) -> None:
        self.input_path = input_path
        self.tokenizer = T2CTokenizerCore(model_path, num_threads=1)
        self.fmt = fmt
        self.want_doc = {"text-code": True, "code-only": False, "all": None}[include]
        self.max_seq_length = max_seq_length
        self.dtype = dtype
        self._fd: int | None = None

    def read(self, block: Block) -> bytes:
        """The bytes of a block (read from the input file when given as a range)."""
        if isinstance(block, bytes):
            return block
        if self._fd is None:
            self._fd = os.open(self.input_path, os.O_RDONLY)
        return read_range(self._fd, *block)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __call__(self, item: Block) -> Chunk:
        block = self.read(item)
        lines = split_lines(block)
        samples, kept_lines, bad = [], [], []
        excluded = 0
        want_doc, fmt = self.want_doc, self.fmt
        for line_no, line in enumerate(lines):
            try:
                record = parse_record(line)
            except BadLine as exc:
                bad.append((line_no, exc.reason, exc.detail))
                continue
            doc = record["docstring"]
            if want_doc is not None and want_doc != (doc is not None and doc != "" and not doc.isspace()):
                excluded += 1
                continue
            code = record.get("normalised")
            if not code:
                try:
                    code = normalise(record["code"])
                except ValueError as exc:
                    bad.append((line_no, "normalise_error", str(exc)))
                    continue
                if not code:
                    bad.append((line_no, "empty_code", "no code left after normalisation"))
                    continue
            samples.append(format_code(code, doc, fmt))
            kept_lines.append(line_no)
        tokens, lengths = self._encode(samples, kept_lines, bad)
        line_numbers = np.asarray(kept_lines, dtype=np.int64)
        fits = lengths <= self.max_seq_length
        too_long = int(len(fits) - np.count_nonzero(fits))
        if too_long:
            tokens = tokens[np.repeat(fits, lengths)]
            lengths, line_numbers = lengths[fits], line_numbers[fits]
        tokens = tokens.astype(self.dtype)
        skipped = {k: v for k, v in (("excluded_by_include", excluded), ("too_long", too_long)) if v}
        bad.sort()
        return Chunk(tokens, lengths, line_numbers, len(lines), len(block), skipped, bad)

    def _encode(self, samples: list, kept_lines: list, bad: list) -> tuple[np.ndarray, np.ndarray]:
        """Batch-encode (ids in a row, lengths); samples that are not valid Unicode become bad lines."""
        try:
            return self.tokenizer.encode_samples_flat(samples)
        except (UnicodeError, TypeError, RuntimeError):  # what SentencePiece raises for such text
            pass
        keep = []
        for sample, line_no in zip(samples, kept_lines):
            problem = _invalid_unicode(sample)
            if problem:
                bad.append((line_no, "invalid_text", problem))
            else:
                keep.append((sample, line_no))
        kept_lines[:] = [line_no for _, line_no in keep]
        return self.tokenizer.encode_samples_flat([sample for sample, _ in keep])


def _invalid_unicode(segments) -> str:
    """Why a sample's text cannot be encoded as UTF-8, or ``""``."""
    for seg in segments:
        try:
            seg.text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return str(exc)
    return ""


# One encoder per worker process, created by the pool's initializer (the model is loaded once).
_WORKER: ChunkEncoder | None = None


def _init_worker(*args) -> None:
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _WORKER = ChunkEncoder(*args)


def _encode_in_worker(item: Block) -> Chunk:
    assert _WORKER is not None
    return _WORKER(item)


class Encoders:
    """Where blocks are encoded: in this process (``workers == 1``) or in a pool of forked workers.

    Workers are forked as soon as this is created (before the parent imports megatron-core when it has
    not yet, so the forks are small and load their models while the parent imports).  :meth:`ordered`
    yields results in input order with at most ``ahead`` blocks in flight; the input is read in the
    calling thread, so a signal can always interrupt it.  Leaving the ``with`` block after an error
    terminates the workers at once.
    """

    def __init__(self, workers: int, encoder_args: tuple) -> None:
        self.ahead = 2 * workers
        self.local = ChunkEncoder(*encoder_args) if workers == 1 else None
        self.pool = None
        if workers > 1:
            context = multiprocessing.get_context("fork")
            # Freeze the objects that exist now (torch, megatron, ...) so that the workers' garbage
            # collector never walks them: touching them would copy their pages into every worker.
            gc.freeze()
            try:
                self.pool = context.Pool(workers, initializer=_init_worker, initargs=encoder_args)
            finally:
                gc.unfreeze()

    def ordered(self, items: Iterable[Block]) -> Iterator[Chunk]:
        if self.pool is None:
            yield from map(self.local, items)
            return
        pending: deque = deque()
        for item in items:
            pending.append(self.pool.apply_async(_encode_in_worker, (item,)))
            while len(pending) > self.ahead:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def __enter__(self) -> "Encoders":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.local is not None:
            self.local.close()
        if self.pool is not None:
            if exc_type is None:
                self.pool.close()
                self.pool.join()
            self.pool.terminate()


def add_documents(builder, tokens: np.ndarray, lengths: np.ndarray) -> None:
    """Append several documents to an ``IndexedDatasetBuilder`` with one write.

    ``add_document`` stores its ``lengths`` as the sequences of a single document; each record is its own
    document here (megatron-core's GPT preprocessing writes one sequence per document too), so the
    document boundaries it appended are replaced by one per sequence.
    """
    if not len(lengths):
        return
    builder.add_document(tokens, lengths.tolist())
    end = len(builder.sequence_lengths)
    builder.document_indices[-1:] = range(end - len(lengths) + 1, end + 1)


def _import_indexed_dataset():
    with warnings.catch_warnings():  # "Transformer Engine and Apex are not installed": irrelevant here
        warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex", category=UserWarning)
        from megatron.core.datasets import indexed_dataset
    return indexed_dataset


class _Outputs:
    """Temporary files beside the targets, renamed into place by :meth:`commit`, else removed."""

    def __init__(self, targets: list[str]) -> None:
        self.targets = targets
        self.temps: list[str] = []
        for target in targets:
            directory, name = os.path.split(os.path.abspath(target))
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
            os.close(fd)
            self.temps.append(tmp)

    def commit(self) -> None:
        """Rename every temporary file onto its target, in order (so the ``.idx`` goes last).

        Ctrl-C and SIGTERM wait until all are renamed, so that ``.bin`` and ``.idx`` always match.
        """
        main = threading.current_thread() is threading.main_thread()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if main else None
        try:
            for tmp, target in zip(self.temps, self.targets):
                os.replace(tmp, target)
            self.temps = []
        finally:
            if mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def discard(self) -> None:
        for tmp in self.temps:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        self.temps = []


@dataclass
class Totals:
    """Running counts of a run."""

    lines: int = 0
    documents: int = 0
    tokens: int = 0


def token_dtype(vocab_size: int) -> type:
    """The token dtype of the ``.bin``: uint16 while the vocabulary fits (megatron-core's own rule)."""
    return np.uint16 if vocab_size < 65500 else np.int32


def preprocess(config: PreprocessConfig, log: IO[str] | None = sys.stderr) -> dict:
    """Run the whole conversion; return the summary (also written to ``config.summary`` when set).

    Raises :class:`StrictError` for a bad line under ``strict``, ``ValueError`` for bad options.  The
    summary's ``tokens_per_s`` is over ``seconds.run``: reading, parsing, encoding and writing, from the
    first byte read to the outputs renamed into place; ``seconds.setup`` (imports, model loading,
    starting workers) is reported apart.
    """
    start = time.perf_counter()
    if config.workers < 1:
        raise ValueError("--workers must be at least 1")
    if config.max_seq_length < 1:
        raise ValueError("--max-seq-length must be positive")
    if not os.path.exists(config.input):
        raise FileNotFoundError(f"{config.input}: no such file")
    vocab_size = T2CTokenizerCore(config.tokenizer_model).vocab_size  # fails early on a wrong model
    dtype = token_dtype(vocab_size)
    encoder_args = (config.input, config.tokenizer_model, config.format, config.include, config.max_seq_length,
                    dtype)
    report = LineReport(max_shown=config.show_bad, stream=log, label=config.input)
    skipped: Counter = Counter()
    totals = Totals()
    with Encoders(config.workers, encoder_args) as encoders:
        indexed_dataset = _import_indexed_dataset()
        if indexed_dataset.DType.optimal_dtype(vocab_size) != dtype:
            raise RuntimeError("megatron-core chooses another token dtype than token_dtype()")
        targets = [config.output_prefix + ".bin"] + [p for p in (config.index_map,) if p]
        targets.append(config.output_prefix + ".idx")
        setup_seconds = time.perf_counter() - start
        run_start = time.perf_counter()
        outputs = _Outputs(targets)
        try:
            _convert(config, indexed_dataset, dtype, encoders, outputs, report, skipped, totals, run_start)
            outputs.commit()
        finally:
            outputs.discard()
            report.close()
        run_seconds = time.perf_counter() - run_start
    summary = _summary(config, vocab_size, dtype, totals, skipped, report, setup_seconds, run_seconds)
    if config.summary:
        write_json(config.summary, summary)
    return summary


def _blocks(config: PreprocessConfig, stream) -> Iterator[Block]:
    """The input's blocks: ranges of a regular file (workers read them), else bytes read here.

    Blocks are ``config.chunk_bytes`` long, smaller for small files so that every worker gets several.
    """
    if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
        return (block for _, block in iter_line_blocks(stream, config.chunk_bytes))
    size = os.fstat(stream.fileno()).st_size
    block_bytes = config.chunk_bytes
    if config.workers > 1:
        block_bytes = max(min(block_bytes, size // (8 * config.workers)), min(block_bytes, 1 << 16))
    return iter_line_ranges(stream, block_bytes)


def _convert(config: PreprocessConfig, indexed_dataset, dtype, encoders: Encoders, outputs: _Outputs,
             report: LineReport, skipped: Counter, totals: Totals, run_start: float) -> None:
    """Encode the input and write every output to its temporary file."""
    builder = indexed_dataset.IndexedDatasetBuilder(outputs.temps[0], dtype=dtype)
    index_map = None
    try:
        if config.index_map:
            index_map = open(outputs.temps[1], "w", encoding="ascii")
        with open(config.input, "rb") as stream, _progress(config, stream) as bar:
            results = encoders.ordered(_blocks(config, stream))
            with contextlib.closing(results):
                for chunk in results:
                    _account(chunk, totals.lines + 1, report, skipped, config.strict)
                    add_documents(builder, chunk.tokens, chunk.lengths)
                    if index_map is not None and len(chunk.line_numbers):
                        lines = chunk.line_numbers + (totals.lines + 1)
                        index_map.write("\n".join(map(str, lines.tolist())) + "\n")
                    totals.lines += chunk.n_lines
                    totals.documents += len(chunk.lengths)
                    totals.tokens += len(chunk.tokens)
                    _advance(bar, chunk, totals, run_start)
        if index_map is not None:
            index_map.close()
        builder.finalize(outputs.temps[-1])
    finally:
        builder.data_file.close()
        if index_map is not None:
            index_map.close()


def _account(chunk: Chunk, first_line: int, report: LineReport, skipped: Counter, strict: bool) -> None:
    """Count a chunk's skipped and bad lines (in line order); under ``strict`` the first bad one raises."""
    for index, reason, detail in chunk.bad:
        line_no = first_line + index
        if strict:
            raise StrictError(f"line {line_no}: {reason}" + (f": {detail}" if detail else "") +
                              " (--strict stops at the first bad line)")
        report.bad(line_no, reason, detail)
        skipped[reason] += 1
    skipped.update(chunk.skipped)


class _NoBar:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def _progress(config: PreprocessConfig, stream):
    """A tqdm bar over input bytes (docs/s and tokens/s in its postfix), or nothing."""
    if not config.progress:
        return _NoBar()
    from tqdm import tqdm

    size = os.fstat(stream.fileno()).st_size or None
    return tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc="preprocess",
                file=sys.stderr, mininterval=0.5, dynamic_ncols=True)


def _advance(bar, chunk: Chunk, totals: Totals, run_start: float) -> None:
    if bar is None:
        return
    elapsed = max(time.perf_counter() - run_start, 1e-9)
    bar.set_postfix_str(f"{totals.documents / elapsed:,.0f} docs/s, {totals.tokens / elapsed:,.0f} tok/s",
                        refresh=False)
    bar.update(chunk.n_bytes)


def _summary(config: PreprocessConfig, vocab_size: int, dtype, totals: Totals, skipped: Counter,
             report: LineReport, setup_seconds: float, run_seconds: float) -> dict:
    return {
        "input": config.input,
        "bin": config.output_prefix + ".bin",
        "idx": config.output_prefix + ".idx",
        "index_map": config.index_map,
        "tokenizer_model": config.tokenizer_model,
        "vocab_size": vocab_size,
        "dtype": np.dtype(dtype).name,
        "format": config.format,
        "include": config.include,
        "max_seq_length": config.max_seq_length,
        "workers": config.workers,
        "lines": totals.lines,
        "documents": totals.documents,
        "tokens": totals.tokens,
        "skipped": dict(sorted(skipped.items())),
        "bad_lines": report.n_bad,
        "first_bad_lines": [{"line": n, "reason": r, "detail": d} for n, r, d in report.first_bad],
        "seconds": {"setup": round(setup_seconds, 4), "run": round(run_seconds, 4)},
        "docs_per_s": round(totals.documents / run_seconds, 1) if run_seconds else None,
        "tokens_per_s": round(totals.tokens / run_seconds, 1) if run_seconds else None,
    }


def format_summary(summary: dict) -> str:
    """A few human-readable lines about a run."""
    skipped = ", ".join(f"{k}={v}" for k, v in summary["skipped"].items()) or "none"
    return (f"wrote {summary['bin']} and {summary['idx']} ({summary['dtype']}): {summary['documents']} documents, "
            f"{summary['tokens']} tokens from {summary['lines']} lines\n"
            f"skipped: {skipped}\n"
            f"{summary['seconds']['run']:.2f} s: {summary['docs_per_s']:,.0f} docs/s, "
            f"{summary['tokens_per_s']:,.0f} tokens/s with {summary['workers']} worker(s)")
