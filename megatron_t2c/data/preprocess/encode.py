"""Encoding one block of JSONL lines into token ids (a worker's whole job), and the pool that runs it.

A worker reads, parses, formats and batch-encodes its block (:class:`ChunkEncoder`) and returns one token
array with the document lengths and line numbers (:class:`Chunk`).  :class:`Encoders` runs the encoder in
this process (``workers == 1``) or in forked workers, each holding its own tokenizer, and yields results
in input order: the output is byte-identical for any number of workers and any block size.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
from collections import deque
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from megatron_t2c.mrpt.formats import format_code
from megatron_t2c.mrpt.normalise import normalise
from megatron_t2c.tokenizer.loading import open_tokenizer
from megatron_t2c.utils.records import BadLine, parse_record, read_range, split_lines


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
        self.tokenizer = open_tokenizer(model_path, num_threads=1)
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


def encoder_args(config, dtype) -> tuple:
    """The arguments of every worker's :class:`ChunkEncoder` for a :class:`~.config.PreprocessConfig`."""
    return config.tokenizer_model, config.format, config.include, config.max_seq_length, dtype


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

