"""The report of a pipeline run: ``RUN_DIR/report.md`` with PNGs beside it.

Reads the run directory that ``examples/quickstart.sh`` writes (every path below is relative to
``RUN_DIR``; nothing has to exist -- a missing part is shown as "not run", a section that fails shows its
error, the report is always written)::

    data/            functions.jsonl, extract_report.json, tokenizer.model, {fmt}_{include}.{bin,idx,...}
    summary.json     corpus and dataset statistics (megatron_t2c.data.summary), summary.md
    train/<name>/    checkpoints/, log.jsonl, tensorboard/     name: mapt | mrpt_<objective>_<separation>
    eval/<name>/<task>/<mode>.summary.json                     task: humaneval | mbpp
                                                               mode: greedy | sampled | incremental
    hf/<name>/       the exported Hugging Face directory (+ verify.json)
    timings.json     {stage: seconds} (optional)

Sections: pipeline status; the results table shaped like the paper's Table 2 (rows: MAPT, then MRPT runs by
objective x separation; per benchmark pass@1 -- greedy, else sampled --, pass@10 and pass@100 from the
sampled mode, incremental pass@1 pooled per problem -- the paper's -- and per prompt) and the evaluation coverage behind it; training curves
(TensorBoard ``train/loss`` and ``valid/loss``, else ``log.jsonl``) as ``training_curves.png``; corpus and
dataset statistics; t-SNE plots of embedding neighbours (:mod:`megatron_t2c.analysis.embedding_spaces`) for the MAPT
checkpoint and one separated MRPT checkpoint; Hugging Face export verification; the contamination check
(:mod:`megatron_t2c.analysis.contamination`, ``contamination.json``); stage timings.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import sys
import traceback
from typing import Callable, Optional, Sequence

from megatron_t2c.utils.atomic import atomic_open, write_json
from megatron_t2c.utils.jsonl import read_jsonl
from megatron_t2c.evaluation.tasks import NAMES, TASKS as REGISTRY

__all__ = ["Run", "discover_runs", "read_curves", "results_table", "plot_curves", "build_report",
           "TASKS", "MODES", "OBJECTIVE_ORDER", "SEPARATION_ORDER"]

TASKS = NAMES
TASK_TITLES = {name: task.title for name, task in REGISTRY.items()}
MODES = ("greedy", "sampled", "incremental")
OBJECTIVE_ORDER = ("text-code", "code", "corrupt-code", "prefix-code")
SEPARATION_ORDER = ("none", "partial", "full", "auto")
NOT_RUN = "not run"
DASH = "–"

TINY_SCALE_NOTE = (
    "**About the numbers.** This run is the pipeline at tiny scale: a model of a few hundred thousand to a "
    "few million parameters trained for minutes on one CPU on the standard library, not the paper's 100M-350M "
    "models trained for days on GPUs. Pass@k near zero is the expected result. What the report shows is that "
    "every stage is real and connected: functions extracted and tokenised, megatron datasets read back, MAPT "
    "and MRPT runs whose losses fall, checkpoints that load for generation, completions executed against the "
    "benchmarks' tests, embeddings whose code rows separate from the docstring rows, and an exported Hugging "
    "Face model that reproduces the megatron logits.")


# ---------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """One training run (``train/<name>``) and/or its evaluation and export directories."""

    name: str
    stage: str  # mapt | mrpt | ?
    objective: Optional[str]
    separation: Optional[str]
    train_dir: Optional[str] = None
    checkpoint: Optional[str] = None  # resolved latest iteration directory
    iteration: Optional[int] = None

    @property
    def sort_key(self) -> tuple:
        def index(value, order):
            return order.index(value) if value in order else len(order)

        return (0 if self.stage == "mapt" else 1, index(self.objective, OBJECTIVE_ORDER),
                index(self.separation, SEPARATION_ORDER), self.name)

    @property
    def label(self) -> str:
        return "MAPT" if self.stage == "mapt" else "MRPT"


def parse_run_name(name: str) -> tuple[str, Optional[str], Optional[str]]:
    """``(stage, objective, separation)`` from ``mapt`` or ``mrpt_<objective>_<separation>`` (``_`` or ``-``
    inside the objective); unknown names give ``("?", None, None)``."""
    if name == "mapt":
        return "mapt", "text-code", "none"
    if name.startswith("mrpt_"):
        rest = name[len("mrpt_"):]
        objective, _, separation = rest.rpartition("_")
        if separation in SEPARATION_ORDER and objective:
            return "mrpt", objective.replace("_", "-"), separation
        return "mrpt", rest.replace("_", "-"), None
    return "?", None, None


def discover_runs(run_dir: str) -> list[Run]:
    """Every run named under ``train/``, ``eval/`` or ``hf/``, in Table 2 order (MAPT first)."""
    names: set[str] = set()
    for sub in ("train", "eval", "hf"):
        base = os.path.join(run_dir, sub)
        if os.path.isdir(base):
            for name in os.listdir(base):
                path = os.path.join(base, name)
                if os.path.isdir(path) and not name.startswith(".") and name not in ("index_cache", "cache"):
                    if sub != "train" or _looks_like_run(path):
                        names.add(name)
    runs = []
    for name in names:
        stage, objective, separation = parse_run_name(name)
        run = Run(name, stage, objective, separation)
        train_dir = os.path.join(run_dir, "train", name)
        if os.path.isdir(train_dir):
            run.train_dir = train_dir
            _attach_checkpoint(run, os.path.join(train_dir, "checkpoints"))
        runs.append(run)
    return sorted(runs, key=lambda r: r.sort_key)


def _looks_like_run(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, part)) for part in ("checkpoints", "log.jsonl", "tensorboard"))


def _attach_checkpoint(run: Run, save: str) -> None:
    from megatron_t2c.training.checkpointing import CheckpointError, read_run_info, resolve

    if not os.path.isdir(save):
        return
    try:
        run.checkpoint = resolve(save)
        info = read_run_info(run.checkpoint)
    except CheckpointError:
        run.checkpoint = None
        return
    run.iteration = info.get("iteration")
    run.stage = info.get("stage") or run.stage
    run.objective = info.get("objective") or run.objective
    run.separation = info.get("separation") or run.separation


# ---------------------------------------------------------------------------------------------------
# Evaluation results
# ---------------------------------------------------------------------------------------------------

def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else None
    except (OSError, json.JSONDecodeError):
        return None


def eval_summaries(run_dir: str, name: str) -> dict[str, dict[str, dict]]:
    """``{task: {mode: summary}}`` of one run (only the summaries that exist)."""
    out: dict[str, dict[str, dict]] = {}
    for task in TASKS:
        for mode in MODES:
            summary = _read_json(os.path.join(run_dir, "eval", name, task, f"{mode}.summary.json"))
            if summary is not None:
                out.setdefault(task, {})[mode] = summary
    return out


def table_values(summaries: dict[str, dict]) -> dict[str, Optional[float]]:
    """The Table 2 figures of one run and task from its ``{mode: summary}``."""
    greedy, sampled, incremental = (summaries.get(m, {}) for m in MODES)
    pass1 = greedy.get("pass@1", sampled.get("pass@1"))
    return {"pass@1": pass1, "pass@10": sampled.get("pass@10"), "pass@100": sampled.get("pass@100"),
            "incremental_pass@1": incremental.get("incremental_pass@1"),
            "incremental_per_prompt_pass@1": incremental.get("incremental_per_prompt_pass@1")}


TABLE_COLUMNS = (("pass@1", "pass@1"), ("pass@10", "pass@10"), ("pass@100", "pass@100"),
                 ("incremental_pass@1", "incr. pass@1"),
                 ("incremental_per_prompt_pass@1", "incr. pass@1 per prompt"))


def _pct(value: Optional[float]) -> str:
    return DASH if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def results_table(run_dir: str, runs: Sequence[Run]) -> list[str]:
    """The Table 2-shaped markdown table (percentages)."""
    head = ["model", "objective", "separation"]
    for task in TASKS:
        head += [f"{TASK_TITLES[task]} {title}" for _, title in TABLE_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    for run in runs:
        summaries = eval_summaries(run_dir, run.name)
        cells = [f"{run.label} (`{run.name}`)", run.objective or "?", run.separation or "?"]
        for task in TASKS:
            values = table_values(summaries.get(task, {}))
            cells += [_pct(values[key]) for key, _ in TABLE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def coverage_table(run_dir: str, runs: Sequence[Run]) -> list[str]:
    """What each evaluation covered: samples, problems, incremental prompts, passed."""
    lines = ["| run | benchmark | mode | samples | problems (of) | incremental prompts | passed | timed out "
             "| stop: length |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    found = False
    for run in runs:
        for task, modes in eval_summaries(run_dir, run.name).items():
            for mode, s in modes.items():
                found = True
                of = f" of {s['problems_in_task']}" if "problems_in_task" in s else ""
                lines.append(f"| `{run.name}` | {TASK_TITLES[task]} | {mode} | {s.get('samples', DASH)} | "
                             f"{s.get('problems', DASH)}{of} | {s.get('incremental_prompts', DASH)} | "
                             f"{s.get('passed', DASH)} | {s.get('timed_out', DASH)} | "
                             f"{s.get('stop_length', DASH)} |")
    return lines if found else []


# ---------------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------------

def read_curves(train_dir: str) -> dict:
    """``{"train": [(step, loss)], "valid": [(step, loss)], "source": ...}`` of one run, from its TensorBoard
    logs (``train/loss``, ``valid/loss``) or, without them, from ``log.jsonl``."""
    tb = os.path.join(train_dir, "tensorboard")
    if os.path.isdir(tb) and glob.glob(os.path.join(tb, "**", "events.out.tfevents.*"), recursive=True):
        curves = _read_tensorboard(tb)
        if curves["train"]:
            return curves
    curves = {"train": [], "valid": [], "source": "log.jsonl"}
    for record in _log_records(train_dir):
        if "step" not in record:
            continue
        if record.get("loss") is not None:
            curves["train"].append((int(record["step"]), float(record["loss"])))
        if record.get("valid_loss") is not None:
            curves["valid"].append((int(record["step"]), float(record["valid_loss"])))
    return curves


def _read_tensorboard(directory: str) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict = {"train": [], "valid": [], "source": "tensorboard"}
    runs = sorted({os.path.dirname(p) for p in glob.glob(os.path.join(directory, "**", "events.out.tfevents.*"),
                                                         recursive=True)})
    for path in runs:
        acc = EventAccumulator(path, size_guidance={"scalars": 0})
        acc.Reload()
        tags = set(acc.Tags().get("scalars", []))
        for key, tag in (("train", "train/loss"), ("valid", "valid/loss")):
            if tag in tags:
                curves[key].extend((int(e.step), float(e.value)) for e in acc.Scalars(tag))
    for key in ("train", "valid"):  # a resumed run may log a step twice: keep the last value
        curves[key] = sorted(dict(curves[key]).items())
    return curves


def plot_curves(curves: dict[str, dict], output: str) -> Optional[str]:
    """One panel per run: training loss (line) and validation loss (markers) against the step."""
    curves = {name: c for name, c in curves.items() if c["train"] or c["valid"]}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(curves)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, (name, c) in zip(axes.flat, curves.items()):
        if c["train"]:
            steps, losses = zip(*c["train"])
            ax.plot(steps, losses, lw=1.2, label="train/loss")
        if c["valid"]:
            steps, losses = zip(*c["valid"])
            ax.plot(steps, losses, "o--", ms=4, lw=0.8, label="valid/loss")
        ax.set_title(f"{name} ({c['source']})", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


def _log_records(train_dir: str) -> list[dict]:
    """The training log's records (a torn last line of a running or killed job is left out, with a message)."""
    contents = read_jsonl(os.path.join(train_dir, "log.jsonl"), strict=False, quiet=True)
    for lineno, reason in contents.bad:
        print(f"{train_dir}/log.jsonl:{lineno}: skipped ({reason})", file=sys.stderr)
    return [record for _, record in contents.records]


# ---------------------------------------------------------------------------------------------------
# Sections (each returns markdown lines; build_report turns an exception into a note)
# ---------------------------------------------------------------------------------------------------

class _Context:
    def __init__(self, run_dir: str, runs: list[Run], options: dict, report_dir: str):
        self.run_dir, self.runs, self.options, self.report_dir = run_dir, runs, options, report_dir
        self.files: list[str] = []

    def path(self, *parts: str) -> str:
        return os.path.join(self.run_dir, *parts)

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.report_dir)


def _status_section(ctx: _Context) -> list[str]:
    data = ctx.path("data")
    datasets = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(data, "*.idx")))
    train = [r for r in ctx.runs if r.train_dir]
    with_ckpt = [r for r in train if r.checkpoint]
    evals = sorted(glob.glob(ctx.path("eval", "*", "*", "*.summary.json")))
    hf = [r.name for r in ctx.runs if os.path.isdir(ctx.path("hf", r.name))]
    verified = [n for n in hf if os.path.exists(ctx.path("hf", n, "verify.json"))]

    def done(flag: bool, text: str) -> str:
        return text if flag else NOT_RUN

    mapt = next((r for r in with_ckpt if r.stage == "mapt"), None)
    mrpt = [r for r in with_ckpt if r.stage == "mrpt"]
    rows = [
        ("extract functions", done(os.path.exists(os.path.join(data, "extract_report.json")),
                                   "`data/functions.jsonl`, `data/extract_report.json`")),
        ("train tokenizer", done(os.path.exists(os.path.join(data, "tokenizer.model")), "`data/tokenizer.model`")),
        ("datasets", done(bool(datasets), ", ".join(f"`{d}`" for d in datasets))),
        ("statistics", done(os.path.exists(ctx.path("summary.json")), "`summary.json`, `summary.md`")),
        ("MAPT", done(mapt is not None, f"`train/mapt`, iteration {mapt.iteration}" if mapt else "")),
        ("MRPT", done(bool(mrpt), f"{len(mrpt)} run{'s' if len(mrpt) != 1 else ''}: "
                      + ", ".join(f"`{r.name}`" for r in mrpt))),
        ("evaluation", done(bool(evals), f"{len(evals)} summaries under `eval/`")),
        ("HF export", done(bool(hf), f"{len(hf)} exported ({len(verified)} with `verify.json`)")),
    ]
    partial = [r.name for r in train if not r.checkpoint]
    lines = ["| stage | status / outputs |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    if partial:
        lines += ["", "Training directories without a complete checkpoint (not finished or failed): "
                  + ", ".join(f"`{n}`" for n in partial) + "."]
    return lines


def _mbpp_skipped(ctx: _Context) -> list[str]:
    """The main job's note when MBPP could not be had (``eval/mbpp_skipped.json``)."""
    skipped = _read_json(ctx.path("eval", "mbpp_skipped.json"))
    if not skipped:
        return []
    return ["", f"**MBPP was skipped**: {skipped.get('reason', 'the data could not be had')}. To add it: "
                f"{skipped.get('how_to_provide', '')}; then re-run the main job (finished stages are kept)."]


def _results_section(ctx: _Context) -> list[str]:
    if not ctx.runs:
        return [f"*{NOT_RUN}: no runs under `train/` or `eval/`.*"] + _mbpp_skipped(ctx)
    lines = ["Percentages. pass@1: greedy decoding (the sampled pass@1 where no greedy run exists); pass@10 and "
             "pass@100: sampling, shown only where every problem has at least k samples; incremental pass@1 "
             "(paper §3.4): incr. pass@1 pools each problem's original and incremental prompts and averages over "
             "problems (the paper's figure); per prompt averages over all prompts. "
             f"{DASH}: not evaluated.", ""]
    lines += results_table(ctx.run_dir, ctx.runs)
    lines += _mbpp_skipped(ctx)
    coverage = coverage_table(ctx.run_dir, ctx.runs)
    if coverage:
        lines += ["", "What each figure is computed over (quick runs evaluate subsets of the problems):", ""]
        lines += coverage
    else:
        lines += ["", f"*Evaluation: {NOT_RUN} (no `eval/<run>/<task>/<mode>.summary.json`).*"]
    return lines


def _training_section(ctx: _Context) -> list[str]:
    train = [r for r in ctx.runs if r.train_dir]
    if not train:
        return [f"*{NOT_RUN}.*"]
    lines = ["| run | stage | objective | separation | steps | first loss | last loss | last valid loss | "
             "median tokens/s | checkpoint |", "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    curves = {}
    for r in train:
        records = _log_records(r.train_dir)
        steps = [x for x in records if x.get("loss") is not None]
        valid = [x for x in records if x.get("valid_loss") is not None]
        tps = sorted(x["tokens_per_s"] for x in steps if isinstance(x.get("tokens_per_s"), (int, float)))
        cells = [f"`{r.name}`", r.stage, r.objective or "?", r.separation or "?",
                 str(steps[-1]["step"]) if steps else DASH,
                 f"{steps[0]['loss']:.3f}" if steps else DASH, f"{steps[-1]['loss']:.3f}" if steps else DASH,
                 f"{valid[-1]['valid_loss']:.3f}" if valid else DASH,
                 f"{tps[len(tps) // 2]:,.0f}" if tps else DASH,
                 f"iteration {r.iteration}" if r.checkpoint else NOT_RUN]
        lines.append("| " + " | ".join(cells) + " |")
        curves[r.name] = read_curves(r.train_dir)
    png = plot_curves(curves, ctx.path("training_curves.png"))
    if png:
        ctx.files.append(png)
        sources = sorted({c["source"] for c in curves.values() if c["train"] or c["valid"]})
        lines += ["", f"![training curves]({ctx.rel(png)})", "",
                  f"Loss per step ({' and '.join(sources)}); MRPT losses count only the tokens their objective "
                  "scores (code tokens for `code`), so they are not comparable across objectives."]
    else:
        lines += ["", f"*Training curves: {NOT_RUN} (no TensorBoard scalars or log records).*"]
    return lines


def _statistics_section(ctx: _Context) -> list[str]:
    summary = _read_json(ctx.path("summary.json"))
    if summary is None:
        return [f"*{NOT_RUN}: no `summary.json` (tools/data_summary.py RUN_DIR writes it).*"]
    from megatron_t2c.data.summary import format_markdown

    text = format_markdown(summary)
    body = [line.replace("## ", "### ", 1) if line.startswith("## ") else line
            for line in text.splitlines() if not line.startswith("# ")]
    link = " and `summary.md`" if os.path.exists(ctx.path("summary.md")) else ""
    return [f"From `summary.json`{link} (datasets read back with megatron-core)."] + body


def _choose_embedding_runs(ctx: _Context) -> list[Run]:
    with_ckpt = {r.name: r for r in ctx.runs if r.checkpoint}
    chosen = ctx.options.get("embedding_runs")
    if chosen:
        return [with_ckpt[n] for n in chosen if n in with_ckpt]
    picks = [r for r in with_ckpt.values() if r.stage == "mapt"][:1]
    mrpt = [r for r in with_ckpt.values() if r.stage == "mrpt" and r.separation in ("full", "partial")]
    mrpt.sort(key=lambda r: (r.objective != "code", r.separation != "full", r.sort_key))
    return picks + mrpt[:1]


def _embeddings_section(ctx: _Context) -> list[str]:
    if not ctx.options.get("embeddings", True):
        return ["*Skipped (--no-embeddings).*"]
    runs = _choose_embedding_runs(ctx)
    if not runs:
        return [f"*{NOT_RUN}: no MAPT or separated MRPT checkpoint.*"]
    from megatron_t2c.analysis import embedding_spaces as embeddings

    words = ctx.options.get("tokens") or embeddings.DEFAULT_TOKENS
    k = ctx.options.get("neighbours", 20)
    lines = [f"Top-{k} cosine neighbours of {', '.join(f'`{w}`' for w in words)} in the docstring space (base "
             "rows) and the code space (code rows of separated tokens, base rows of the others), drawn with "
             "t-SNE as in the paper's Figures 3 and 5; stars are the query tokens. Without separation both "
             "spaces are the same table. At tiny scale the code rows have moved little from their MAPT copies, "
             "so the neighbourhoods differ only slightly."]
    for run in runs:
        lines += ["", f"### `{run.name}` (separation {run.separation}, iteration {run.iteration})", ""]
        try:
            result = embeddings.analyse(run.checkpoint, ctx.path(f"embeddings_{run.name}"), words=words, k=k,
                                        name=run.name)
        except Exception as exc:  # noqa: BLE001 -- one run's failure must not hide the others
            lines.append(f"*Could not be drawn: {type(exc).__name__}: {exc}*")
            continue
        ctx.files += [result["png"], result["json"]]
        lines += [f"![embeddings {run.name}]({ctx.rel(result['png'])})", "",
                  embeddings.format_markdown(result), "", f"All neighbours: `{ctx.rel(result['json'])}`."]
    return lines


def _hf_section(ctx: _Context) -> list[str]:
    base = ctx.path("hf")
    names = sorted(n for n in os.listdir(base) if os.path.isdir(os.path.join(base, n))) if os.path.isdir(base) else []
    if not names:
        return [f"*{NOT_RUN}.*"]
    lines = ["| run | files | max abs logit difference | tolerance | top-1 agreement | positions | verdict |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name in names:
        files = len(os.listdir(os.path.join(base, name)))
        v = _read_json(os.path.join(base, name, "verify.json"))
        if v is None:
            lines.append(f"| `{name}` | {files} | {DASH} | {DASH} | {DASH} | {DASH} | not verified |")
            continue
        diff, tol, top1 = v.get("max_abs_diff"), v.get("tolerance"), v.get("top1_agreement")
        ok = v.get("ok", None if diff is None or tol is None else diff <= tol)
        lines.append(f"| `{name}` | {files} | {DASH if diff is None else f'{diff:.3g}'} | "
                     f"{DASH if tol is None else f'{tol:g}'} | {DASH if top1 is None else f'{100 * top1:.2f}%'} | "
                     f"{v.get('positions', DASH)} | {'OK' if ok else ('FAILED' if ok is False else DASH)} |")
    lines += ["", "Verification runs the megatron checkpoint and the exported model (`AutoModelForCausalLM`, "
                  "`trust_remote_code`) on the same rows and compares their logits."]
    return lines


def _contamination_section(ctx: _Context) -> list[str]:
    from megatron_t2c.analysis import contamination

    path = ctx.path("contamination.json")
    report = _read_json(path)
    if report is None:
        functions = ctx.path("data", "functions.jsonl")
        if not ctx.options.get("contamination", True):
            return ["*Skipped (--no-contamination); `tools/contamination.py` runs it.*"]
        if not os.path.exists(functions):
            return [f"*{NOT_RUN}: no `data/functions.jsonl`.*"]
        probes, problems, notes = contamination.benchmark_probes(mbpp_path=ctx.options.get("mbpp_path"))
        report = contamination.check([("functions.jsonl", contamination.iter_jsonl_texts(functions))], probes,
                                     problems, notes=notes)
        write_json(path, report)
        with atomic_open(ctx.path("contamination.md")) as fh:
            fh.write(contamination.format_markdown(report))
    ctx.files.append(path)
    return ["Exact matches of the benchmarks' prompt descriptions and reference solutions in the training "
            "data, whitespace removed (paper §3.3; MBPP: test and dev problems); details in "
            "`contamination.json`.", "", contamination.format_markdown(report).rstrip("\n")]


def _timings_section(ctx: _Context) -> list[str]:
    timings = _read_json(ctx.path("timings.json"))
    if not timings:
        return [f"*{NOT_RUN}: no `timings.json`.*"]
    lines = ["| stage | seconds |", "|---|---:|"]
    total = 0.0
    for stage, seconds in timings.items():
        if isinstance(seconds, (int, float)):
            total += seconds
            lines.append(f"| {stage} | {seconds:,.1f} |")
        else:
            lines.append(f"| {stage} | {seconds} |")
    lines.append(f"| **total** | **{total:,.1f}** |")
    return lines


def _scale_line(runs: Sequence[Run]) -> Optional[str]:
    """One sentence on the size of this run's models, from the MAPT (else first) checkpoint."""
    run = next((r for r in runs if r.checkpoint and r.stage == "mapt"), None) or \
        next((r for r in runs if r.checkpoint), None)
    if run is None:
        return None
    try:
        from megatron_t2c.training.checkpointing import read_run_info
        from megatron_t2c.training.metrics import matmul_parameters

        info = read_run_info(run.checkpoint)
        a = info["architecture"]
        params = matmul_parameters(a["num_layers"], a["hidden_size"], a["ffn_hidden_size"], info["vocab_size"])
    except Exception:  # noqa: BLE001 -- a sentence of context, never a reason to fail
        return None
    return (f"Models of this run: {a['num_layers']} layers, hidden size {a['hidden_size']}, "
            f"{a['num_attention_heads']} heads, context {a['seq_length']}, vocabulary {info['vocab_size']} "
            f"(about {params / 1e6:.2f}M parameters in matrix multiplications); `{run.name}` saved at "
            f"iteration {run.iteration}.")


def _code_loss_section(ctx: _Context) -> list[str]:
    from megatron_t2c.analysis.code_loss import report_lines

    lines, chart = report_lines(ctx.run_dir, [r.name for r in ctx.runs], ctx.path("code_loss.png"), ctx.rel)
    if chart:
        ctx.files.append(chart)
    return lines


SECTIONS: tuple[tuple[str, Callable[[_Context], list[str]]], ...] = (
    ("Pipeline status", _status_section),
    ("Results (shaped like the paper's Table 2)", _results_section),
    ("Held-out code loss", _code_loss_section),
    ("Training", _training_section),
    ("Corpus and dataset statistics", _statistics_section),
    ("Embedding neighbourhoods (paper Figures 3 and 5)", _embeddings_section),
    ("Hugging Face export", _hf_section),
    ("Contamination check", _contamination_section),
    ("Timings", _timings_section),
)


def build_report(run_dir: str, *, output: Optional[str] = None, embeddings: bool = True,
                 embedding_runs: Optional[Sequence[str]] = None, tokens: Optional[Sequence[str]] = None,
                 neighbours: int = 20, contamination: bool = True, mbpp_path: Optional[str] = None) -> dict:
    """Write ``RUN_DIR/report.md`` (or ``output``) and its PNGs; returns ``{"report", "files", "sections"}``
    with each section's status (``ok`` or the error)."""
    run_dir = os.path.abspath(run_dir)
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{run_dir} is not a directory")
    runs = discover_runs(run_dir)
    report = os.path.abspath(output or os.path.join(run_dir, "report.md"))
    ctx = _Context(run_dir, runs, {"embeddings": embeddings, "embedding_runs": list(embedding_runs or []),
                                   "tokens": list(tokens or []), "neighbours": neighbours,
                                   "contamination": contamination, "mbpp_path": mbpp_path},
                   os.path.dirname(report))
    lines = [f"# megatron_t2c run report: `{os.path.basename(run_dir)}`", "", TINY_SCALE_NOTE, ""]
    scale = _scale_line(runs)
    if scale:
        lines += [scale, ""]
    status: dict[str, str] = {}
    for title, section in SECTIONS:
        lines += [f"## {title}", ""]
        try:
            body = section(ctx)
            status[title] = "ok"
        except Exception as exc:  # noqa: BLE001 -- a partial run must still get its report
            traceback.print_exc(file=sys.stderr)
            body = [f"*This section could not be built: {type(exc).__name__}: {exc}*"]
            status[title] = f"{type(exc).__name__}: {exc}"
        lines += body + [""]
    with atomic_open(report) as fh:
        fh.write("\n".join(lines))
    return {"report": report, "files": ctx.files, "sections": status}
