"""Finding, reading, decoding and filtering Python source files (paper Appendix A).

Every file either passes or is rejected with exactly one named reason, so a corpus report can account
for all of them.  The filters, in the order they are applied:

==================== ===========================================================================
reason               the file
==================== ===========================================================================
``unreadable``       could not be read (permissions, vanished, not a regular file)
``too_large``        is 1 MB or larger
``duplicate``        has the same bytes (MD5) as a file seen earlier (decided by the caller, who
                     sees files in order; see :mod:`megatron_t2c.extract_corpus`)
``undecodable``      cannot be decoded with the encoding PEP 263 declares (UTF-8 by default)
``long_line``        has a line longer than 1,000 characters
``long_average_line`` has an average line length above 100 characters
``not_python3``      is not accepted by Python 3's compiler front end (:mod:`megatron_t2c.extraction`)
==================== ===========================================================================
"""

from __future__ import annotations

import hashlib
import io
import os
import sysconfig
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

MAX_FILE_BYTES = 1_000_000
MAX_LINE_CHARS = 1_000
MAX_AVERAGE_LINE_CHARS = 100

UNREADABLE = "unreadable"
TOO_LARGE = "too_large"
DUPLICATE = "duplicate"
UNDECODABLE = "undecodable"
LONG_LINE = "long_line"
LONG_AVERAGE_LINE = "long_average_line"
NOT_PYTHON3 = "not_python3"
#: Every reason a file can be rejected for, in the order the filters apply.
REJECTION_REASONS = (UNREADABLE, TOO_LARGE, DUPLICATE, UNDECODABLE, LONG_LINE, LONG_AVERAGE_LINE, NOT_PYTHON3)


class Rejected(Exception):
    """A file failed a filter; ``reason`` is one of :data:`REJECTION_REASONS`."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class InputFile:
    """A file to process: where it is, and the name it gets in records (relative to its input root)."""

    path: str
    name: str


def stdlib_root() -> Path:
    """The running interpreter's standard library: the embedded default corpus."""
    return Path(sysconfig.get_paths()["stdlib"])


def _walk_python_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        if dirpath == str(root) and root == stdlib_root():
            # the default corpus is the standard library itself, not third-party packages
            dirnames[:] = [d for d in dirnames if d != "site-packages"]
        for fn in sorted(filenames):
            if fn.endswith(".py"):
                yield Path(dirpath) / fn


def discover(paths: Iterable[str | os.PathLike]) -> list[InputFile]:
    """The ``*.py`` files under each path (a directory, recursively, or a file), in a stable order.

    With no paths, the interpreter's standard library.  Names are relative to the directory given
    (a file keeps the path it was given); a path that does not exist raises ``FileNotFoundError``.
    """
    roots = [Path(p) for p in paths] or [stdlib_root()]
    files: list[InputFile] = []
    seen: set[str] = set()
    for root in roots:
        if root.is_dir():
            found = [InputFile(str(p), p.relative_to(root).as_posix()) for p in _walk_python_files(root)]
        elif root.exists() or root.is_symlink():
            found = [InputFile(str(root), root.as_posix())]
        else:
            raise FileNotFoundError(f"no such file or directory: {root}")
        for f in found:
            real = os.path.realpath(f.path)
            if real not in seen:  # the same file named twice is read once
                seen.add(real)
                files.append(f)
    return files


def read_bytes(path: str) -> bytes:
    """The file's bytes, after the size filter (which does not need to read them)."""
    try:
        if not os.path.isfile(path):
            raise Rejected(UNREADABLE, "not a regular file")
        if os.path.getsize(path) >= MAX_FILE_BYTES:
            raise Rejected(TOO_LARGE, f"{os.path.getsize(path)} bytes")
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES)
    except OSError as exc:
        raise Rejected(UNREADABLE, exc.strerror or str(exc)) from None
    if len(data) >= MAX_FILE_BYTES:  # grew while we looked
        raise Rejected(TOO_LARGE, f"{len(data)}+ bytes")
    return data


def content_hash(data: bytes) -> str:
    """MD5 of a file's bytes: the exact-duplicate key."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def decode(data: bytes) -> str:
    """Decode per PEP 263 (a coding cookie or BOM, else UTF-8) with Python's universal newlines."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        text = data.decode(encoding)
    except (SyntaxError, UnicodeDecodeError, LookupError) as exc:
        raise Rejected(UNDECODABLE, str(exc).split("\n")[0]) from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def check_lines(text: str) -> None:
    """The line-length filters."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        return
    lengths = list(map(len, lines))
    longest = max(lengths)
    if longest > MAX_LINE_CHARS:
        raise Rejected(LONG_LINE, f"a line of {longest} characters")
    average = sum(lengths) / len(lengths)
    if average > MAX_AVERAGE_LINE_CHARS:
        raise Rejected(LONG_AVERAGE_LINE, f"average line length {average:.1f}")
