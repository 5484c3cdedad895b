"""MBPP (Austin et al. 2021): the official ``mbpp.jsonl``; the test split is task ids 11-510 (500 problems).

The file is not bundled; :func:`resolve_mbpp_path` finds it (``--mbpp-path``, ``$T2C_MBPP``,
``../shared/data/mbpp.jsonl`` beside a checkout, the user cache) or downloads it once into the cache; its
sha256 is checked on every read.

For each problem:

- ``description``: ``text``, whitespace collapsed;
- ``entry_point``: the tested function, the first top-level function of the reference ``code`` that the
  ``test_list`` asserts call (asserts may also call other names, e.g. a ``Pair`` class);
- ``signature``: that function's ``def`` header as written;
- ``context``: every top-level statement of the reference *before* the tested function (imports, helper
  functions, classes such as ``Node``/``Pair`` that the tests build).  The prompt holds only the signature,
  so a model cannot write code before it; giving what precedes the tested function mirrors HumanEval's
  context and keeps classes the tests use defined;
- ``tail``: reference code *after* the tested function (only task 223 in the test split: a helper it
  calls), part of the reference program but not of the prompt: a completion may define helpers after its
  function in the same way;
- ``reference``: the tested function's body as written (original indentation: tabs or 2 spaces occur);
- ``tests``: ``test_setup_code`` then the ``test_list`` asserts (``challenge_test_list`` is not used,
  as in the paper and the usual MBPP evaluation).

Line endings are converted to ``\\n``.  Nothing is executed here.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path

from megatron_t2c.mrpt.formats import clean_docstring

from megatron_t2c.evaluation.problem import Problem

SHA256 = "0b7004a79cd62d9ec7ecdd5a6e5f0ef1210ff00b286df3c5d5b57bf38c58e19a"
#: Task-id ranges (inclusive) of the splits; only ``test`` is fixed by the MBPP authors.
SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
#: ``../shared/data/mbpp.jsonl`` beside a checkout of this repository (absent on a user's machine).
SHARED_PATH = Path(__file__).resolve().parents[4] / "shared" / "data" / "mbpp.jsonl"
#: The official file (google-research/google-research, folder mbpp); ``$T2C_MBPP_URL`` overrides it.
MBPP_URL = "https://raw.githubusercontent.com/google-research/google-research/master/mbpp/mbpp.jsonl"
ENV_PATH, ENV_URL = "T2C_MBPP", "T2C_MBPP_URL"
DOWNLOAD_TIMEOUT_S = 20


class MbppUnavailable(FileNotFoundError):
    """The official mbpp.jsonl could not be found or downloaded; the message says how to provide it."""


def cache_path() -> Path:
    """The user cache the download goes to: ``$XDG_CACHE_HOME`` (or ``~/.cache``)/megatron_t2c/mbpp.jsonl."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "megatron_t2c" / "mbpp.jsonl"


def how_to_provide() -> str:
    return (f"pass --mbpp-path FILE, set ${ENV_PATH}=FILE, place it at {SHARED_PATH} or {cache_path()}, or allow "
            f"the one-time download from {os.environ.get(ENV_URL) or MBPP_URL}")


def _download(url: str, target: Path) -> None:
    """Fetch ``url`` into ``target`` atomically, keeping it only if it is the official file."""
    from urllib.request import urlopen

    from megatron_t2c.utils.atomic import atomic_open

    with urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        data = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise ValueError(f"{url} did not give the official mbpp.jsonl (sha256 {digest}, expected {SHA256})")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(str(target), "wb") as fh:
        fh.write(data)


def resolve_mbpp_path(path: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Where the official mbpp.jsonl is, in this order: ``path`` (``--mbpp-path``), ``$T2C_MBPP``,
    :data:`SHARED_PATH`, :func:`cache_path`; when none exists it is downloaded once into the cache.
    An explicitly named file that does not exist is an error (it is never replaced by another).  Raises
    :class:`MbppUnavailable` with the reason and the ways to provide the file."""
    for given, name in ((path, "--mbpp-path"), (os.environ.get(ENV_PATH) or None, f"${ENV_PATH}")):
        if given is not None:
            if not Path(given).is_file():
                raise MbppUnavailable(f"MBPP data not found: {name} {given} is not a file")
            return Path(given)
    for candidate in (SHARED_PATH, cache_path()):
        if candidate.is_file():
            return candidate
    if not download:
        raise MbppUnavailable(f"MBPP data not found; {how_to_provide()}")
    url, target = os.environ.get(ENV_URL) or MBPP_URL, cache_path()
    try:
        _download(url, target)
    except (OSError, ValueError) as exc:  # no network (URLError is an OSError), a wrong file, a read-only cache
        raise MbppUnavailable(f"MBPP data not found and the download failed ({exc}); {how_to_provide()}") from None
    return target


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _tested_function(module: ast.Module, tests: list[str]) -> ast.FunctionDef:
    defs = {n.name: n for n in module.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    for test in tests:
        for node in ast.walk(ast.parse(test)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in defs:
                return defs[node.func.id]
    raise ValueError("the asserts call no top-level function of the reference")


def problem_from_record(record: dict) -> Problem:
    """Build a :class:`Problem` from one ``mbpp.jsonl`` record."""
    task_id = f"MBPP/{record['task_id']}"
    code = _lf(record["code"])
    module = ast.parse(code)
    fn = _tested_function(module, record["test_list"])
    lines = code.split("\n")
    first = min([fn.lineno] + [d.lineno for d in fn.decorator_list]) - 1
    body0 = fn.body[0]
    if body0.lineno == fn.lineno:  # "def f(x): return x": the body shares the header's line
        header_line = lines[fn.lineno - 1]
        signature = "\n".join(lines[first:fn.lineno - 1] + [header_line[:body0.col_offset].rstrip()])
        indent = header_line[:len(header_line) - len(header_line.lstrip())] + "    "
        reference = indent + "\n".join([header_line[body0.col_offset:]] + lines[fn.lineno:fn.end_lineno])
    else:
        signature = "\n".join(lines[first:body0.lineno - 1]).rstrip()
        reference = "\n".join(lines[body0.lineno - 1:fn.end_lineno])
    context = "\n".join(lines[:first]).strip("\n")
    tail = "\n".join(lines[fn.end_lineno:]).strip("\n")
    tests = "\n".join(_lf(t) for t in [record.get("test_setup_code", "")] + record["test_list"] if t.strip())
    return Problem(task_id, fn.name, clean_docstring(record["text"]) or "", signature, context,
                   reference.rstrip() + "\n", tests + "\n", tail)


def load_mbpp_records(path: str | Path | None = None) -> list[dict]:
    """All 974 records of ``mbpp.jsonl`` after checking its sha256."""
    path = resolve_mbpp_path(path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise ValueError(f"{path} is not the official mbpp.jsonl: sha256 {digest}, expected {SHA256}")
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def load_mbpp(path: str | Path | None = None, split: str = "test") -> list[Problem]:
    """The problems of ``split`` (default ``test``: task ids 11-510, 500 problems) in task-id order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    lo, hi = SPLITS[split]
    records = sorted((r for r in load_mbpp_records(path) if lo <= r["task_id"] <= hi), key=lambda r: r["task_id"])
    return [problem_from_record(r) for r in records]


def native_program(problem: Problem, completion: str) -> str:
    """A completion of MBPP's own (text) prompt is a whole solution: ``completion + "\\n" + tests``."""
    return completion + "\n" + problem.tests
