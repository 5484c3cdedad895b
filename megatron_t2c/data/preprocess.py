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

Inputs: one or more JSONL files, ``.jsonl.gz`` files (decompressed as a stream), directories (their
``*.jsonl`` and ``*.jsonl.gz`` files, sorted, recursively), glob patterns and ``--files-from`` lists.  They
are read as one stream in the order given: documents keep that order, ``--index-map`` numbers lines over
the concatenation, and bad lines are reported with their own file and line.  Nothing is held in memory
but the dataset index (megatron-core's builder: 12 bytes per document in arrays).

Corpus scale.  With several ranks (``mpiexec``, ``srun``, torchrun, ``--ranks N``; :mod:`.sharding`) or
``--shard-dir``/``--resume``, the inputs are cut into shards (a compressed file is one shard, a plain file
is cut at line ends every ``--shard-bytes``); each rank converts its shards into ``pp-NNNNNN.bin/.idx``
plus the documents' line numbers and a marker with its counts, and rank 0 merges the shards in input order
with ``IndexedDatasetBuilder.add_index``, renumbering lines and replaying the bad-line report.  The
``.bin``, ``.idx``, index map and summary are byte-identical to a single-process run on the same input.
"""

from __future__ import annotations

import contextlib
import gc
import glob
import gzip
import multiprocessing
import os
import signal
import stat
import sys
import tempfile
import threading
import time
import warnings
from array import array
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import IO, Iterable, Iterator, NamedTuple

import numpy as np

from megatron_t2c.data import corpus_ranks
from megatron_t2c.utils.atomic import write_json
from megatron_t2c.utils.dataclass_flags import option
from megatron_t2c.mrpt.formats import FORMATS, INCLUDE, format_code
from megatron_t2c.mrpt.normalise import normalise
from megatron_t2c.utils.records import (BadLine, LineReport, iter_line_blocks, iter_line_ranges, parse_record, read_range,
                      split_lines)
from megatron_t2c.data.corpus_ranks import ShardingOptions, World
from megatron_t2c.data.source_files import expand_paths
from megatron_t2c.tokenizer.sentencepiece import T2CTokenizerCore


@dataclass(kw_only=True)
class PreprocessConfig(ShardingOptions):
    """What to convert and how."""

    input: list[str] = option(help="JSONL files of extraction records (tools/extract_functions.py), read in "
                                   "the order given: FILE.jsonl, FILE.jsonl.gz, a FIFO, a directory (its "
                                   "*.jsonl[.gz], sorted) or a glob pattern ('shards/*.jsonl.gz')",
                              metavar="FILE.jsonl")
    files_from: str | None = option(None, "also read input paths from this file, one a line ('-': stdin)",
                                    metavar="FILE")
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
    shard_bytes: int = option(256 << 20, "sharded runs: cut plain input files into shards of about this many "
                                         "bytes (a .gz file is one shard)")
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


#: A block of whole lines: its bytes, or ``(path, offset, length)`` of a range of an input file.
Block = bytes | tuple[str, int, int]


class ChunkEncoder:
    """Read, parse, select, format and encode a block of JSONL lines (a worker's whole job)."""

    def __init__(self, model_path: str, fmt: str, include: str, max_seq_length: int, dtype: type) -> None:
        self.path: str | None = None
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
        path, offset, length = block
        if path != self.path:
            self.close()
        if self._fd is None:
            self._fd, self.path = os.open(path, os.O_RDONLY), path
        return read_range(self._fd, offset, length)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = self.path = None

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
    builder.document_indices[-1:] = array("q", range(end - len(lengths) + 1, end + 1))


def new_builder(indexed_dataset, bin_path: str, dtype):
    """megatron-core's ``IndexedDatasetBuilder``, its index kept in typed arrays (12 bytes per document
    instead of ~70 in lists of Python ints); the files it writes are the same."""
    builder = indexed_dataset.IndexedDatasetBuilder(bin_path, dtype=dtype)
    builder.sequence_lengths = array("i")
    builder.document_indices = array("q", [0])
    return builder


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
    input_lines: list = field(default_factory=list)  # lines read from each input


def token_dtype(vocab_size: int) -> type:
    """The token dtype of the ``.bin``: uint16 while the vocabulary fits (megatron-core's own rule)."""
    return np.uint16 if vocab_size < 65500 else np.int32


def resolve_inputs(config: PreprocessConfig) -> list[str]:
    """The input files in reading order: paths as given, patterns expanded, directories listed."""
    given = [config.input] if isinstance(config.input, str) else list(config.input or [])
    out: list[str] = []
    for path in expand_paths(given, config.files_from):
        if os.path.isdir(path):
            found = sorted(p for p in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                           if p.endswith((".jsonl", ".jsonl.gz")) and os.path.isfile(p))
            if not found:
                raise FileNotFoundError(f"{path}: no *.jsonl or *.jsonl.gz files in this directory")
            out.extend(found)
        elif not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file")
        else:
            out.append(path)
    if not out:
        raise ValueError("no input files")
    return out


def _is_gzip(path: str) -> bool:
    return path.endswith(".gz")


def _open_input(path: str):
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


class _Report(LineReport):
    """A :class:`LineReport` that also remembers the input file of each line it shows."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.first_bad_inputs: list[str] = []

    def bad(self, line_no: int, reason: str, detail: str = "") -> None:
        shown = len(self.first_bad)
        super().bad(line_no, reason, detail)
        if len(self.first_bad) > shown:
            self.first_bad_inputs.append(self.label)


@dataclass(frozen=True)
class Piece:
    """Part of one input: all of it (``length`` None: compressed files, pipes) or a byte range of a file."""

    input: int
    path: str
    start: int = 0
    length: int | None = None


def _pieces_of(index: int, path: str, shard_bytes: int | None) -> Iterator[Piece]:
    """An input as pieces: whole, or cut at line ends every ``shard_bytes`` (plain regular files)."""
    if shard_bytes is None or _is_gzip(path) or not stat.S_ISREG(os.stat(path).st_mode):
        yield Piece(index, path)
        return
    with open(path, "rb") as stream:
        for start, length in iter_line_ranges(stream, shard_bytes):
            yield Piece(index, path, start, length)


def _blocks(config: PreprocessConfig, piece: Piece, stream) -> Iterator[Block]:
    """A piece's blocks: ranges of a regular file (workers read them), else bytes read here.

    Blocks are ``config.chunk_bytes`` long, smaller for small inputs so that every worker gets several.
    """
    if _is_gzip(piece.path) or not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
        return (block for _, block in iter_line_blocks(stream, config.chunk_bytes))
    size = os.fstat(stream.fileno()).st_size if piece.length is None else piece.length
    block_bytes = config.chunk_bytes
    if config.workers > 1:
        block_bytes = max(min(block_bytes, size // (8 * config.workers)), min(block_bytes, 1 << 16))
    end = None if piece.length is None else piece.start + piece.length
    return ((piece.path, offset, length)
            for offset, length in iter_line_ranges(stream, block_bytes, piece.start, end))


def _chunks(config: PreprocessConfig, encoders: Encoders, pieces: Iterable[Piece]) -> Iterator[tuple[Piece, Chunk]]:
    """Every block of ``pieces``, encoded, in order, with the piece it came from (one pipeline throughout)."""
    tags: deque = deque()

    def items() -> Iterator[Block]:
        for piece in pieces:
            with _open_input(piece.path) as stream:
                for block in _blocks(config, piece, stream):
                    tags.append(piece)
                    yield block

    results = encoders.ordered(items())
    with contextlib.closing(results):
        for chunk in results:
            yield tags.popleft(), chunk


def preprocess(config: PreprocessConfig, log: IO[str] | None = sys.stderr) -> dict | None:
    """Run the whole conversion; return the summary (also written to ``config.summary`` when set).

    Raises :class:`StrictError` for a bad line under ``strict``, ``ValueError`` for bad options.  The
    summary's ``tokens_per_s`` is over ``seconds.run``: reading, parsing, encoding and writing, from the
    first byte read to the outputs renamed into place; ``seconds.setup`` (imports, model loading,
    starting workers) is reported apart.  Several ranks, ``ranks > 1``, ``shard_dir`` or ``resume``: a
    sharded run (module doc); ranks other than 0 return None.
    """
    start = time.perf_counter()
    if config.workers < 1:
        raise ValueError("--workers must be at least 1")
    if config.max_seq_length < 1:
        raise ValueError("--max-seq-length must be positive")
    if config.shard_bytes < 1:
        raise ValueError("--shard-bytes must be positive")
    inputs = resolve_inputs(config)
    vocab_size = T2CTokenizerCore(config.tokenizer_model).vocab_size  # fails early on a wrong model
    sharded = config.ranks > 1 or config.shard_dir is not None or config.resume
    if not sharded and corpus_ranks.detect_world(config.launcher).size == 1:
        return _single(config, inputs, vocab_size, log, start)
    if config.ranks > 1:
        _import_indexed_dataset()  # once, before the local ranks are forked
    return corpus_ranks.run_ranks(config, lambda world: _sharded(config, inputs, vocab_size, log, world, start))


def _setup(config: PreprocessConfig, vocab_size: int):
    dtype = token_dtype(vocab_size)
    encoder_args = (config.tokenizer_model, config.format, config.include, config.max_seq_length, dtype)
    return dtype, encoder_args


def _import_checked(vocab_size: int, dtype):
    indexed_dataset = _import_indexed_dataset()
    if indexed_dataset.DType.optimal_dtype(vocab_size) != dtype:
        raise RuntimeError("megatron-core chooses another token dtype than token_dtype()")
    return indexed_dataset


def _targets(config: PreprocessConfig) -> list[str]:
    targets = [config.output_prefix + ".bin"] + [p for p in (config.index_map,) if p]
    targets.append(config.output_prefix + ".idx")
    return targets


def _single(config: PreprocessConfig, inputs: list[str], vocab_size: int, log, start: float) -> dict:
    dtype, encoder_args = _setup(config, vocab_size)
    report = _Report(max_shown=config.show_bad, stream=log, label=inputs[0])
    skipped: Counter = Counter()
    totals = Totals(input_lines=[0] * len(inputs))
    with Encoders(config.workers, encoder_args) as encoders:
        indexed_dataset = _import_checked(vocab_size, dtype)
        setup_seconds = time.perf_counter() - start
        run_start = time.perf_counter()
        outputs = _Outputs(_targets(config))
        try:
            _convert(config, inputs, indexed_dataset, dtype, encoders, outputs, report, skipped, totals, run_start)
            outputs.commit()
        finally:
            outputs.discard()
            report.close()
        run_seconds = time.perf_counter() - run_start
    summary = _summary(config, inputs, vocab_size, dtype, totals, skipped, report, setup_seconds, run_seconds)
    if config.summary:
        write_json(config.summary, summary)
    return summary


def _convert(config: PreprocessConfig, inputs: list[str], indexed_dataset, dtype, encoders: Encoders,
             outputs: _Outputs, report: _Report, skipped: Counter, totals: "Totals", run_start: float) -> None:
    """Encode the inputs and write every output to its temporary file."""
    builder = new_builder(indexed_dataset, outputs.temps[0], dtype)
    index_map = None
    try:
        if config.index_map:
            index_map = open(outputs.temps[1], "w", encoding="ascii")
        pieces = (Piece(i, path) for i, path in enumerate(inputs))
        with _progress(config, inputs) as bar:
            for piece, chunk in _chunks(config, encoders, pieces):
                report.label = piece.path
                _account(chunk, totals.input_lines[piece.input] + 1, report, skipped, config.strict,
                         piece.path if len(inputs) > 1 else None)
                add_documents(builder, chunk.tokens, chunk.lengths)
                if index_map is not None and len(chunk.line_numbers):
                    lines = chunk.line_numbers + (totals.lines + 1)
                    index_map.write("\n".join(map(str, lines.tolist())) + "\n")
                totals.input_lines[piece.input] += chunk.n_lines
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


def _strict_error(line_no: int, reason: str, detail: str, path: str | None) -> StrictError:
    where = f"{path}, line {line_no}" if path else f"line {line_no}"
    return StrictError(f"{where}: {reason}" + (f": {detail}" if detail else "") +
                       " (--strict stops at the first bad line)")


def _account(chunk: Chunk, first_line: int, report: LineReport, skipped: Counter, strict: bool,
             path: str | None = None) -> None:
    """Count a chunk's skipped and bad lines (in line order); under ``strict`` the first bad one raises."""
    for index, reason, detail in chunk.bad:
        line_no = first_line + index
        if strict:
            raise _strict_error(line_no, reason, detail, path)
        report.bad(line_no, reason, detail)
        skipped[reason] += 1
    skipped.update(chunk.skipped)


# --- sharded runs --------------------------------------------------------------------------------------

#: Options that change what a shard holds: a shard directory is only resumed with the same ones.
_PLAN_OPTIONS = ("format", "include", "max_seq_length", "shard_bytes", "show_bad", "strict")


def _sharded(config: PreprocessConfig, inputs: list[str], vocab_size: int, log, world: World,
             start: float) -> dict | None:
    dtype, encoder_args = _setup(config, vocab_size)
    shard_dir = config.shard_dir or config.output_prefix + ".shards"
    plan = {"tool": "preprocess_data", "inputs": [corpus_ranks.file_fingerprint(p) for p in inputs],
            "tokenizer_model": corpus_ranks.file_fingerprint(config.tokenizer_model),
            **{k: getattr(config, k) for k in _PLAN_OPTIONS}}
    with Encoders(config.workers, encoder_args) as encoders:
        indexed_dataset = _import_checked(vocab_size, dtype)
        corpus_ranks.prepare_shard_dir(world, shard_dir, plan, config.resume)  # a barrier: all ranks set up
        pieces = [p for i, path in enumerate(inputs) for p in _pieces_of(i, path, config.shard_bytes)]
        mine = [(s, p) for s, p in enumerate(pieces) if s % world.size == world.rank]
        setup_seconds = time.perf_counter() - start
        run_start = time.perf_counter()
        for s, piece in mine:
            name = corpus_ranks.shard_name("pp", s)
            if config.resume and _valid_done(corpus_ranks.read_done(shard_dir, name), piece):
                continue
            meta = _convert_shard(config, indexed_dataset, dtype, encoders, shard_dir, name, s, piece, world.rank)
            if meta.get("strict"):
                break  # the run fails; rank 0 reports the first bad line of all
    world.barrier()  # every shard is complete (or a strict run stopped)
    world.detached = True
    if world.rank != 0:
        return None
    report = _Report(max_shown=config.show_bad, stream=log, label=inputs[0])
    skipped: Counter = Counter()
    totals = Totals(input_lines=[0] * len(inputs))
    outputs = _Outputs(_targets(config))
    try:
        manifest = _merge(config, inputs, pieces, indexed_dataset, dtype, shard_dir, outputs, report, skipped,
                          totals)
        outputs.commit()
    finally:
        outputs.discard()
        report.close()
    run_seconds = time.perf_counter() - run_start
    summary = _summary(config, inputs, vocab_size, dtype, totals, skipped, report, setup_seconds, run_seconds)
    summary.update(ranks=world.size, shards=len(pieces))
    write_json(os.path.join(shard_dir, corpus_ranks.MANIFEST),
               {"tool": "preprocess_data", "inputs": inputs, "outputs": _targets(config), "shards": manifest})
    if not config.keep_shards:
        corpus_ranks.remove_shards(shard_dir)
    world.cleanup()
    if config.summary:
        write_json(config.summary, summary)
    return summary


def _valid_done(meta: dict | None, piece: Piece) -> bool:
    return (meta is not None and not meta.get("strict") and meta["input"] == piece.path
            and meta["start"] == piece.start and meta["length"] == piece.length)


@dataclass
class _ShardLog:
    """The bad-line bookkeeping of one shard (lines counted from 0 at the shard's first)."""

    max_shown: int
    n_bad: int = 0
    first_bad: list = field(default_factory=list)


def _convert_shard(config: PreprocessConfig, indexed_dataset, dtype, encoders: Encoders, shard_dir: str,
                   name: str, index: int, piece: Piece, rank: int) -> dict:
    """Convert one piece into the shard's ``.bin``/``.idx``/``.lines``; write its marker; return it."""
    t0 = time.perf_counter()
    base = os.path.join(shard_dir, name)
    outputs = _Outputs([base + ".bin", base + ".lines", base + ".idx"])
    skipped: Counter = Counter()
    log = _ShardLog(config.show_bad)
    lines = documents = tokens = 0
    strict = None
    try:
        builder = new_builder(indexed_dataset, outputs.temps[0], dtype)
        try:
            with open(outputs.temps[1], "wb") as line_file:
                for _, chunk in _chunks(config, encoders, [piece]):
                    if chunk.bad and config.strict:
                        at, reason, detail = chunk.bad[0]
                        strict = {"line": lines + at, "reason": reason, "detail": detail}
                        break
                    for at, reason, detail in chunk.bad:
                        if len(log.first_bad) < log.max_shown:
                            log.first_bad.append([lines + at, reason, detail])
                        skipped[reason] += 1
                    log.n_bad += len(chunk.bad)
                    skipped.update(chunk.skipped)
                    add_documents(builder, chunk.tokens, chunk.lengths)
                    (chunk.line_numbers + lines).tofile(line_file)
                    lines += chunk.n_lines
                    documents += len(chunk.lengths)
                    tokens += len(chunk.tokens)
            builder.finalize(outputs.temps[-1])
        finally:
            builder.data_file.close()
        meta = {"shard": index, "rank": rank, "input": piece.path, "start": piece.start, "length": piece.length,
                "outputs": [name + ".bin", name + ".idx", name + ".lines"], "lines": lines,
                "documents": documents, "tokens": tokens, "skipped": dict(sorted(skipped.items())),
                "bad_lines": log.n_bad, "first_bad_lines": log.first_bad,
                "seconds": round(time.perf_counter() - t0, 3)}
        if strict is not None:
            meta["strict"] = strict
        else:
            outputs.commit()
    finally:
        outputs.discard()
    corpus_ranks.write_done(shard_dir, name, meta)
    return meta


def _merge(config: PreprocessConfig, inputs: list[str], pieces: list[Piece], indexed_dataset, dtype,
           shard_dir: str, outputs: _Outputs, report: _Report, skipped: Counter, totals: "Totals") -> list[dict]:
    """Concatenate the shards, in order, into the final outputs; replay their accounting."""
    builder = new_builder(indexed_dataset, outputs.temps[0], dtype)
    index_map = open(outputs.temps[1], "w", encoding="ascii") if config.index_map else None
    manifest = []
    # add_index runs gc.collect() for every shard: without freezing, each walks all of torch (~0.25 s)
    gc.freeze()
    try:
        for s, piece in enumerate(pieces):
            name = corpus_ranks.shard_name("pp", s)
            meta = corpus_ranks.read_done(shard_dir, name)
            if meta is None or meta["input"] != piece.path or meta["start"] != piece.start:
                raise RuntimeError(f"shard {name} in {shard_dir} is missing or does not match the inputs")
            first_line = totals.input_lines[piece.input] + 1
            if meta.get("strict"):
                bad = meta["strict"]
                raise _strict_error(first_line + bad["line"], bad["reason"], bad["detail"],
                                    piece.path if len(inputs) > 1 else None)
            report.label = piece.path
            for at, reason, detail in meta["first_bad_lines"]:
                report.bad(first_line + at, reason, detail)
            report.n_bad += meta["bad_lines"] - len(meta["first_bad_lines"])
            skipped.update(meta["skipped"])
            base = os.path.join(shard_dir, name)
            if meta["documents"]:
                builder.add_index(base)
            if index_map is not None and meta["documents"]:
                lines = np.fromfile(base + ".lines", dtype=np.int64) + (totals.lines + 1)
                for part in np.array_split(lines, max(1, len(lines) // (1 << 20))):
                    index_map.write("\n".join(map(str, part.tolist())) + "\n")
            totals.input_lines[piece.input] += meta["lines"]
            totals.lines += meta["lines"]
            totals.documents += meta["documents"]
            totals.tokens += meta["tokens"]
            manifest.append(meta)
        if index_map is not None:
            index_map.close()
        builder.finalize(outputs.temps[-1])
    finally:
        gc.unfreeze()
        builder.data_file.close()
        if index_map is not None:
            index_map.close()
    return manifest


class _NoBar:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def _progress(config: PreprocessConfig, inputs: list[str]):
    """A tqdm bar over input bytes (docs/s and tokens/s in its postfix), or nothing."""
    if not config.progress:
        return _NoBar()
    from tqdm import tqdm

    sizes = [0 if _is_gzip(p) or not os.path.isfile(p) else os.path.getsize(p) for p in inputs]
    size = sum(sizes) if all(sizes) else None
    return tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc="preprocess",
                file=sys.stderr, mininterval=0.5, dynamic_ncols=True)


def _advance(bar, chunk: Chunk, totals: Totals, run_start: float) -> None:
    if bar is None:
        return
    elapsed = max(time.perf_counter() - run_start, 1e-9)
    bar.set_postfix_str(f"{totals.documents / elapsed:,.0f} docs/s, {totals.tokens / elapsed:,.0f} tok/s",
                        refresh=False)
    bar.update(chunk.n_bytes)


def _summary(config: PreprocessConfig, inputs: list[str], vocab_size: int, dtype, totals: Totals,
             skipped: Counter, report: _Report, setup_seconds: float, run_seconds: float) -> dict:
    """The run's summary; everything but ``workers``, ``ranks``, ``shards``, ``seconds`` and the rates is
    the same for any number of workers and ranks."""
    given = config.input
    if not isinstance(given, str) and len(given) == 1:
        given = given[0]  # one input: a string, as before several were possible
    return {
        "input": given,
        "inputs": [{"path": p, "lines": n} for p, n in zip(inputs, totals.input_lines)],
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
        "ranks": 1,
        "shards": 0,
        "lines": totals.lines,
        "documents": totals.documents,
        "tokens": totals.tokens,
        "skipped": dict(sorted(skipped.items())),
        "bad_lines": report.n_bad,
        "first_bad_lines": [{"input": p, "line": n, "reason": r, "detail": d}
                            for p, (n, r, d) in zip(report.first_bad_inputs, report.first_bad)],
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
            f"{summary['tokens_per_s']:,.0f} tokens/s with {summary['workers']} worker(s)"
            + (f" x {summary['ranks']} rank(s), {summary['shards']} shard(s)" if summary.get("shards") else ""))
