"""Reading extraction records (JSONL) with every line accounted for.

``t2c extract`` (:mod:`megatron_t2c.data.extraction`) writes one JSON object per line with the fields
``id path kind name signature docstring code`` and optionally ``normalised``.  :func:`parse_record` turns one
raw line into a record or raises :class:`BadLine` with a short machine-readable ``reason`` (the key under
which the line is counted) and a human-readable detail; :class:`LineReport` counts reasons and prints the first few bad
lines with their 1-based line numbers.  The tokenizer trainer and the preprocessor share both, so a line
that one of them rejects the other rejects for the same reason.

Reasons: ``blank_line``, ``invalid_utf8``, ``invalid_json``, ``not_an_object``,
``missing_field:NAME``, ``wrong_type:NAME``; consumers add their own (``normalise_error``,
``empty_code``, ``excluded_by_include``, ``too_long``, ...).
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, BinaryIO, Iterator

_NONE = type(None)
#: Fields every record must have, with the types they may take.
REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {"code": (str,), "docstring": (str, _NONE)}
#: Fields that, when present and not null, must be strings (null counts as absent).
OPTIONAL_FIELDS = ("normalised", "id", "path", "kind", "name", "signature")
_TYPE_NAMES = {str: "a string", _NONE: "null"}


class BadLine(ValueError):
    """A line that is not a valid record: ``reason`` is its count key, ``detail`` says why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def parse_record(line: bytes | str) -> dict:
    """Parse and validate one JSONL line (UTF-8, with or without its line break) into a record dict.

    Accepts exactly what ``json.loads`` accepts (one JSON value, JSON whitespace around it), but calls
    the C scanner directly: this runs once per input line, most of them lines that are then left out.
    """
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadLine("invalid_utf8", str(exc)) from None
    try:
        record, end = _scan_once(line, 0)
        if end != len(line) and line[end:].strip(_JSON_SPACE):
            raise ValueError("extra data")
    except (StopIteration, ValueError):  # not a JSON value starting at 0: let json.loads say why
        record = _loads(line)
    if type(record) is not dict:
        raise BadLine("not_an_object", f"expected a JSON object, got {type(record).__name__}")
    for name, types in REQUIRED_FIELDS.items():
        value = record.get(name, _MISSING)
        if type(value) not in types:
            if value is _MISSING:
                raise BadLine(f"missing_field:{name}", f"no {name!r} field")
            raise BadLine(f"wrong_type:{name}", _type_detail(name, value, types))
    for name in OPTIONAL_FIELDS:
        value = record.get(name)
        if value is not None and type(value) is not str:
            raise BadLine(f"wrong_type:{name}", _type_detail(name, value, (str, _NONE)))
    return record


_scan_once = json.JSONDecoder().scan_once
_JSON_SPACE = " \t\n\r"
_MISSING = object()


def _loads(line: str) -> object:
    """``json.loads`` with its errors turned into :class:`BadLine`."""
    try:
        return json.loads(line)
    except ValueError as exc:
        if not line.strip(_JSON_SPACE):
            raise BadLine("blank_line") from None
        raise BadLine("invalid_json", str(exc)) from None


def _type_detail(name: str, value: object, types: tuple[type, ...]) -> str:
    wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
    return f"{name!r} must be {wanted}, got {type(value).__name__}"


def iter_line_blocks(stream: BinaryIO, block_bytes: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
    """Read a binary stream in blocks of whole lines: yields ``(number of the first line, block)``.

    Blocks are about ``block_bytes`` long and end with a line break (the last one may not); line numbers
    are 1-based.  Works on pipes and FIFOs as well as files.
    """
    line_no = 1
    while True:
        block = stream.read(block_bytes)
        if not block:
            return
        if not block.endswith(b"\n"):
            block += stream.readline()
        yield line_no, block
        line_no += block.count(b"\n")


def iter_line_ranges(stream: BinaryIO, block_bytes: int = 1 << 20, start: int = 0,
                     end: int | None = None) -> Iterator[tuple[int, int]]:
    """Split a seekable binary file into ranges of whole lines: yields ``(offset, length)``.

    Only the line ends at the cuts are read, so whoever reads the ranges (parallel workers) does all
    the reading.  Ranges are about ``block_bytes`` long and cover the file as it was at the start, or
    ``[start, end)`` of it (which must begin at a line start and end at a line end or the file's end).
    """
    size = stream.seek(0, os.SEEK_END)
    if end is not None:
        size = min(size, end)
    while start < size:
        stop = start + block_bytes
        if stop < size:
            stream.seek(stop)
            stop = min(stop + len(stream.readline()), size)
        else:
            stop = size
        yield start, stop - start
        start = stop


def read_range(fd: int, offset: int, length: int) -> bytes:
    """``length`` bytes of a file from ``offset`` (fewer only at its end)."""
    parts = []
    while length > 0:
        part = os.pread(fd, length, offset)
        if not part:
            break
        parts.append(part)
        offset += len(part)
        length -= len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def split_lines(block: bytes) -> list[bytes]:
    """The lines of a block of whole lines, without their line breaks."""
    lines = block.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


@dataclass
class LineReport:
    """Counts lines by outcome and prints the first ``max_shown`` bad lines to ``stream``.

    ``counts`` maps a reason to how many lines it covered; :meth:`bad` records a line that is wrong
    (printed with its number while fewer than ``max_shown`` were), :meth:`skip` lines left out on purpose
    (counted only).
    """

    max_shown: int = 10
    stream: IO[str] | None = field(default_factory=lambda: sys.stderr)
    label: str = ""
    counts: Counter = field(default_factory=Counter)
    n_bad: int = 0
    first_bad: list[tuple[int, str, str]] = field(default_factory=list)

    def bad(self, line_no: int, reason: str, detail: str = "") -> None:
        """Count a bad line; print it while fewer than ``max_shown`` have been printed."""
        self.counts[reason] += 1
        self.n_bad += 1
        if len(self.first_bad) < self.max_shown:
            self.first_bad.append((line_no, reason, detail))
            if self.stream is not None:
                where = f"{self.label}:{line_no}" if self.label else f"line {line_no}"
                print(f"{where}: {reason}" + (f": {detail}" if detail else ""), file=self.stream)

    def skip(self, reason: str, count: int = 1) -> None:
        """Count ``count`` lines left out on purpose (not printed)."""
        if count:
            self.counts[reason] += count

    def close(self) -> None:
        """Print how many bad lines were counted but not shown."""
        hidden = self.n_bad - len(self.first_bad)
        if hidden > 0 and self.stream is not None:
            print(f"... and {hidden} more bad lines (counted by reason in the summary)", file=self.stream)
