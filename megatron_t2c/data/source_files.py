"""Finding, reading, decoding and filtering Python source files (paper Appendix A).

Every file either passes or is rejected with exactly one named reason, so a corpus report can account
for all of them.  The filters, in the order they are applied:

==================== ===========================================================================
reason               the file
==================== ===========================================================================
``unreadable``       could not be read (permissions, vanished, not a regular file)
``too_large``        is 1 MB or larger
``duplicate``        has the same bytes (MD5) as a file seen earlier (decided by the caller, who
                     sees files in order; see :mod:`megatron_t2c.data.corpus_extraction`)
``undecodable``      cannot be decoded with the encoding PEP 263 declares (UTF-8 by default)
``long_line``        has a line longer than 1,000 characters
``long_average_line`` has an average line length above 100 characters
``not_python3``      is not accepted by Python 3's compiler front end (:mod:`megatron_t2c.data.extraction`)
==================== ===========================================================================
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import sys
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


def expand_paths(paths: Iterable[str | os.PathLike], files_from: str | None = None) -> Iterator[str]:
    """The paths given, then those listed in ``files_from`` (one a line; ``-``: stdin; ``#`` comments).

    A path that does not exist but contains ``*``, ``?`` or ``[`` is a glob pattern (``**`` recurses),
    replaced by its matches in sorted order; a pattern without matches raises ``FileNotFoundError``.
    Streamed: a list of millions of paths is never held in memory.
    """
    for p in paths:
        yield from _expand(os.fspath(p))
    if files_from is None:
        return
    fh = sys.stdin if files_from == "-" else open(files_from, encoding="utf-8")
    try:
        for line in fh:
            line = line.rstrip("\r\n")
            if line.strip() and not line.lstrip().startswith("#"):
                yield from _expand(line)
    finally:
        if fh is not sys.stdin:
            fh.close()


def _expand(path: str) -> Iterator[str]:
    if not os.path.lexists(path) and glob.has_magic(path):
        matches = sorted(glob.glob(path, recursive=True))
        if not matches:
            raise FileNotFoundError(f"no such file or directory: {path} (a pattern without matches)")
        yield from matches
    else:
        yield path


def iter_discover(paths: Iterable[str | os.PathLike], files_from: str | None = None) -> Iterator[InputFile]:
    """Stream the ``*.py`` files under each path (a directory, recursively, or a file), in a stable order.

    With neither paths nor ``files_from``, the interpreter's standard library.  Names are relative to the
    directory given (a file keeps the path it was given); a path that does not exist raises
    ``FileNotFoundError``.  The same file named twice (overlapping roots, symlinks) is yielded once: the
    MD5s of real paths already seen are the only state kept (about 25-50 bytes per file).
    """
    from megatron_t2c.data.dedup import KeySet  # here: source_files is imported by workers that never discover

    roots = expand_paths(paths, files_from)
    first = next(roots, None)
    if first is None and files_from is None:
        roots, first = iter([]), str(stdlib_root())
    seen = KeySet(width=2)
    for root in ([first] if first is not None else []):
        roots = _chain(root, roots)
    for root_str in roots:
        root = Path(root_str)
        if root.is_dir():
            found = (InputFile(str(p), p.relative_to(root).as_posix()) for p in _walk_python_files(root))
        elif root.exists() or root.is_symlink():
            found = iter([InputFile(str(root), root.as_posix())])
        else:
            raise FileNotFoundError(f"no such file or directory: {root}")
        for f in found:
            real = os.path.realpath(f.path)
            if seen.add(int.from_bytes(hashlib.md5(real.encode("utf-8", "surrogateescape"),
                                                   usedforsecurity=False).digest(), "little")):
                yield f  # the same file named twice is read once


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def discover(paths: Iterable[str | os.PathLike], files_from: str | None = None) -> list[InputFile]:
    """:func:`iter_discover` as a list."""
    return list(iter_discover(paths, files_from))


def check_paths(paths: Iterable[str | os.PathLike]) -> None:
    """Raise ``FileNotFoundError`` now for a path given that does not exist (and matches nothing)."""
    for p in paths:
        for path in _expand(os.fspath(p)):
            if not os.path.lexists(path):
                raise FileNotFoundError(f"no such file or directory: {path}")


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
