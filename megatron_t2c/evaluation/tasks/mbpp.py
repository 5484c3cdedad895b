"""MBPP (Austin et al. 2021): the official ``mbpp.jsonl``; the test split is task ids 11-510 (500 problems).

The file is not bundled: :func:`load_mbpp` reads ``path`` or, by default, ``../shared/data/mbpp.jsonl``
relative to the repository root, and checks its sha256 (from that folder's README) before use.

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
from pathlib import Path

from megatron_t2c.mrpt.formats import clean_docstring

from megatron_t2c.evaluation.problem import Problem

SHA256 = "0b7004a79cd62d9ec7ecdd5a6e5f0ef1210ff00b286df3c5d5b57bf38c58e19a"
#: Task-id ranges (inclusive) of the splits; only ``test`` is fixed by the MBPP authors.
SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
DEFAULT_PATH = Path(__file__).resolve().parents[4] / "shared" / "data" / "mbpp.jsonl"  # beside the checkout


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
    path = Path(path) if path is not None else DEFAULT_PATH
    if not path.is_file():
        raise FileNotFoundError(
            f"MBPP data not found at {path}: pass load_mbpp(path=...) or place the official mbpp.jsonl "
            f"(google-research/google-research, folder mbpp) at {DEFAULT_PATH}")
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
