"""Where a run's input comes from: input resolution, pieces (shards) of inputs, and blocks of whole lines.

Inputs: one or more JSONL files, ``.jsonl.gz`` files (decompressed as a stream), directories (their
``*.jsonl`` and ``*.jsonl.gz`` files, sorted, recursively), glob patterns and ``--files-from`` lists.  They
are read as one stream in the order given.  The reader cuts the input into blocks of whole lines (byte
ranges of a file, which the workers read themselves; the bytes themselves for a pipe, FIFO or ``.gz``).
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import os
import stat
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator

from megatron_t2c.data.preprocess.config import PreprocessConfig
from megatron_t2c.data.preprocess.encode import Block, Chunk, Encoders
from megatron_t2c.data.source_files import expand_paths
from megatron_t2c.utils.records import iter_line_blocks, iter_line_ranges


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


def is_gzip(path: str) -> bool:
    return path.endswith(".gz")


def open_input(path: str):
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


@dataclass(frozen=True)
class Piece:
    """Part of one input: all of it (``length`` None: compressed files, pipes) or a byte range of a file."""

    input: int
    path: str
    start: int = 0
    length: int | None = None


def pieces_of(index: int, path: str, shard_bytes: int | None) -> Iterator[Piece]:
    """An input as pieces: whole, or cut at line ends every ``shard_bytes`` (plain regular files)."""
    if shard_bytes is None or is_gzip(path) or not stat.S_ISREG(os.stat(path).st_mode):
        yield Piece(index, path)
        return
    with open(path, "rb") as stream:
        for start, length in iter_line_ranges(stream, shard_bytes):
            yield Piece(index, path, start, length)


def blocks(config: PreprocessConfig, piece: Piece, stream) -> Iterator[Block]:
    """A piece's blocks: ranges of a regular file (workers read them), else bytes read here.

    Blocks are ``config.chunk_bytes`` long, smaller for small inputs so that every worker gets several.
    """
    if is_gzip(piece.path) or not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
        return (block for _, block in iter_line_blocks(stream, config.chunk_bytes))
    size = os.fstat(stream.fileno()).st_size if piece.length is None else piece.length
    block_bytes = config.chunk_bytes
    if config.workers > 1:
        block_bytes = max(min(block_bytes, size // (8 * config.workers)), min(block_bytes, 1 << 16))
    end = None if piece.length is None else piece.start + piece.length
    return ((piece.path, offset, length)
            for offset, length in iter_line_ranges(stream, block_bytes, piece.start, end))


def encoded_chunks(config: PreprocessConfig, encoders: Encoders,
                   pieces: Iterable[Piece]) -> Iterator[tuple[Piece, Chunk]]:
    """Every block of ``pieces``, encoded, in order, with the piece it came from (one pipeline throughout)."""
    tags: deque = deque()

    def items() -> Iterator[Block]:
        for piece in pieces:
            with open_input(piece.path) as stream:
                for block in blocks(config, piece, stream):
                    tags.append(piece)
                    yield block

    results = encoders.ordered(items())
    with contextlib.closing(results):
        for chunk in results:
            yield tags.popleft(), chunk
