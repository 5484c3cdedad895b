"""One JSON-lines reader for every resumable stage: records with their line numbers, a torn last line reported.

A stage that appends one JSON object per line and flushes (generate, execute, the training log) can be
killed in the middle of a line.  :func:`read_jsonl` returns the complete records and says whether the last
line was torn (no newline at the end of the file and not a JSON object); with ``repair=True`` the torn
bytes are cut off the file so that the stage can append after the last complete record.  A last line that
is a complete object without its newline gets the newline (appending would otherwise glue two records).

Any other line that is not a JSON object is either an error naming ``path:line`` (``strict=True``, the
default: a stage's own output must not hold such lines) or listed in :attr:`JsonlContents.bad` with its
reason (``invalid_json``, ``not_an_object``, ``invalid_utf8``) for the caller to report.  Blank lines are
skipped and counted.  ``.gz`` files are read (never repaired).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import sys
from typing import Iterator, Optional

__all__ = ["JsonlError", "JsonlContents", "iter_jsonl", "read_jsonl"]


class JsonlError(ValueError):
    """A line of a JSON-lines file that is not a record where records are required."""


@dataclasses.dataclass
class JsonlContents:
    """What :func:`read_jsonl` found in a file."""

    records: list[tuple[int, dict]] = dataclasses.field(default_factory=list)  # (1-based line, object)
    torn_line: Optional[int] = None  # the line number of a torn last line (dropped), else None
    torn_offset: Optional[int] = None  # the byte offset where the torn line starts (uncompressed files)
    bad: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (line, reason), strict=False only
    blank: int = 0  # blank lines skipped

    @property
    def torn(self) -> bool:
        return self.torn_line is not None


def _classify(raw: bytes) -> tuple[Optional[dict], str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "invalid_utf8"
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None, "invalid_json"
    if not isinstance(value, dict):
        return None, "not_an_object"
    return value, ""


def iter_jsonl(path: str | os.PathLike, contents: Optional[JsonlContents] = None, *,
               strict: bool = True) -> Iterator[tuple[int, dict]]:
    """Stream ``(line number, record)``; torn last line, bad and blank lines go to ``contents`` (see module)."""
    contents = contents if contents is not None else JsonlContents()
    opener = gzip.open if str(path).endswith(".gz") else open
    offset = 0
    with opener(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            start, offset = offset, offset + len(raw)
            complete = raw.endswith(b"\n")
            if not raw.strip():
                contents.blank += 1
                continue
            record, reason = _classify(raw)
            if record is not None:
                yield lineno, record
            elif not complete:  # the last line, cut by a kill
                contents.torn_line, contents.torn_offset = lineno, start
            elif strict:
                raise JsonlError(f"{path}:{lineno}: not a JSON record ({reason})")
            else:
                contents.bad.append((lineno, reason))


def read_jsonl(path: str | os.PathLike, *, repair: bool = False, strict: bool = True,
               missing_ok: bool = True, quiet: bool = False) -> JsonlContents:
    """All records of ``path`` (see the module docstring); an absent file is empty when ``missing_ok``.

    ``repair``: cut a torn last line off the file (and end a complete last line with its newline), so a
    stage can append; a message goes to stderr unless ``quiet``.
    """
    contents = JsonlContents()
    if missing_ok and not os.path.exists(path):
        return contents
    contents.records = list(iter_jsonl(path, contents, strict=strict))
    if repair and not str(path).endswith(".gz"):
        _repair(path, contents, quiet)
    elif contents.torn and not quiet:
        print(f"{path}: line {contents.torn_line} is torn (an interrupted write); it is ignored", file=sys.stderr)
    return contents


def _repair(path: str | os.PathLike, contents: JsonlContents, quiet: bool) -> None:
    size = os.path.getsize(path)
    if size == 0:
        return
    with open(path, "r+b") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        if contents.torn:
            fh.truncate(contents.torn_offset)
            if not quiet:
                print(f"{path}: dropped a torn last line (line {contents.torn_line}, an interrupted write)",
                      file=sys.stderr)
        else:
            fh.seek(size)
            fh.write(b"\n")
