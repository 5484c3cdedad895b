"""Held-out code loss: the mean per-token loss of HumanEval and MBPP reference solutions given their prompts.

At the main job's size every pass@k is zero, yet the models differ: this loss (paper Table 2's models,
measured on the benchmarks' own references) tells them apart at any scale.  Each reference is scored the way
generation would produce it: the prompt exactly as ``t2c evaluate generate`` builds it, then the reference
body and ``[eoc]``, in one forward pass with the model's own rows, positions and (prefix) mask; the loss is
taken over the continuation only, in code space (everything after ``[python]`` is code).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import NamedTuple, Optional, Sequence

import torch

from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.mrpt.normalise import normalise, split_signature
from megatron_t2c.utils.dataclass_flags import option

TASKS = ("humaneval", "mbpp")


class Reference(NamedTuple):
    """One reference solution as token ids: ``ids[:prompt_length]`` is the prompt, the rest is scored."""

    task_id: str
    ids: tuple[int, ...]
    prompt_length: int


def reference_sequences(problems, tokenizer, fmt: str, max_length: Optional[int] = None
                        ) -> tuple[list[Reference], dict[str, int]]:
    """The scored sequences of ``problems`` and the count of those left out by reason (``no_body``: the
    reference normalises to a bare signature; ``too_long``: prompt + reference exceed ``max_length``)."""
    out, skipped = [], {"no_body": 0, "too_long": 0}
    for problem in problems:
        _, body = split_signature(normalise(problem.function))
        if not body.strip():
            skipped["no_body"] += 1
            continue
        prompt = tokenizer.encode_sample(problem.prompt(fmt))
        # in a training sample the text between [python] and [eoc] ends with the space before [eoc]
        ids = tuple(prompt) + tuple(tokenizer.encode_text(" " + body + " ")) + (st.EOC_ID,)
        if max_length is not None and len(ids) > max_length:
            skipped["too_long"] += 1
            continue
        out.append(Reference(problem.task_id, ids, len(prompt)))
    return out, skipped


def reference_loss(model, reference: Reference, fmt: str, objective: str) -> tuple[float, int]:
    """(summed cross-entropy, token count) of the continuation of one reference."""
    from megatron_t2c.inference.generator import full_forward_logits

    logits = full_forward_logits(model, reference.ids, fmt, objective)
    targets = torch.tensor(reference.ids[reference.prompt_length:], dtype=torch.long, device=logits.device)
    scored = logits[reference.prompt_length - 1:len(reference.ids) - 1]
    return float(torch.nn.functional.cross_entropy(scored, targets, reduction="sum")), len(targets)


def code_loss(model, references: Sequence[Reference], fmt: str, objective: str, progress: bool = False) -> dict:
    """Token-weighted mean loss over ``references`` (and the per-problem means)."""
    total, tokens, per_problem = 0.0, 0, {}
    iterator = references
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(references, desc="code loss", unit="problem")
    for ref in iterator:
        loss, n = reference_loss(model, ref, fmt, objective)
        total, tokens = total + loss, tokens + n
        per_problem[ref.task_id] = loss / n
    return {"loss": total / tokens if tokens else None, "tokens": tokens, "problems": len(per_problem),
            "per_problem": per_problem}


@dataclasses.dataclass(kw_only=True)
class CodeLossConfig:
    """Held-out code loss of one checkpoint."""

    checkpoint: str = option(positional=True, help="a checkpoint: run directory (latest iteration) or iteration "
                                                   "directory")
    output: Optional[str] = option(None, "write the result as JSON", metavar="FILE.json")
    tasks: list[str] = option(default_factory=lambda: list(TASKS), help="benchmarks to score", choices=TASKS)
    mbpp_path: Optional[str] = option(None, "the official mbpp.jsonl (default: found or downloaded as for "
                                            "evaluation; MBPP is left out, with a note, when it cannot be had)")
    limit: Optional[int] = option(None, "score the first N problems of each benchmark")
    cpu: bool = option(True, "compute on the CPU (gloo); --no-cpu: CUDA")
    progress: bool = option(True, "show a progress bar")


def measure(config: CodeLossConfig) -> dict:
    """Load the checkpoint (one rank), score every benchmark's references, write ``config.output``."""
    from megatron_t2c.evaluation.tasks.humaneval import load_humaneval
    from megatron_t2c.evaluation.tasks.mbpp import MbppUnavailable, load_mbpp
    from megatron_t2c.runtime import distributed
    from megatron_t2c.tokenizer.loading import open_tokenizer
    from megatron_t2c.training import checkpointing
    from megatron_t2c.utils.atomic import write_json

    start = time.time()
    distributed.initialize_distributed(1, 1, cpu=config.cpu, seed=0)
    try:
        ckpt = checkpointing.resolve(config.checkpoint)
        model, info = checkpointing.model_from_checkpoint(ckpt)
        if not config.cpu:
            model.cuda()
        tokenizer = open_tokenizer(checkpointing.tokenizer_path(ckpt))
        fmt, objective = info["format"], info["objective"]
        max_length = getattr(model, "max_sequence_length", None)
        result = {"checkpoint": ckpt, "format": fmt, "objective": objective, "separation": info["separation"],
                  "tasks": {}, "notes": []}
        for task in config.tasks:
            try:
                problems = load_humaneval() if task == "humaneval" else load_mbpp(config.mbpp_path)
            except MbppUnavailable as exc:
                result["notes"].append(f"{task} skipped: {exc}")
                continue
            problems = problems[:config.limit] if config.limit is not None else problems
            references, skipped = reference_sequences(problems, tokenizer, fmt, max_length)
            with torch.no_grad():
                scores = code_loss(model, references, fmt, objective, progress=config.progress)
            scores["skipped"] = skipped
            scores["perplexity"] = math.exp(scores["loss"]) if scores["loss"] is not None else None
            result["tasks"][task] = scores
    finally:
        distributed.destroy_distributed()
    result["seconds"] = round(time.time() - start, 1)
    if config.output:
        write_json(config.output, result)
    return result


def format_markdown(result: dict) -> str:
    rows = ["| benchmark | code loss | perplexity | tokens | problems | left out |", "|---|---:|---:|---:|---:|---|"]
    for task, s in result["tasks"].items():
        left = ", ".join(f"{k} {v}" for k, v in s["skipped"].items() if v) or "-"
        rows.append(f"| {task} | {s['loss']:.4f} | {s['perplexity']:.2f} | {s['tokens']:,} | {s['problems']} | "
                    f"{left} |")
    return "\n".join(rows + [f"\n{note}" for note in result.get("notes", [])])


# ---------------------------------------------------------------------------------------------------
# In the run report: one table over the runs, one bar chart
# ---------------------------------------------------------------------------------------------------

def result_path(run_dir: str, name: str) -> str:
    """Where the main job keeps a run's code loss: ``eval/<run>/code_loss.json``."""
    return os.path.join(run_dir, "eval", name, "code_loss.json")


def report_lines(run_dir: str, names: Sequence[str], png: str, rel) -> tuple[list[str], Optional[str]]:
    """Markdown for the report (runs in ``names`` order) and the bar chart's path (None without results)."""
    results = {}
    for name in names:
        path = result_path(run_dir, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                results[name] = json.load(fh)
    if not results:
        return ["*Not run (no `eval/<run>/code_loss.json`; `t2c code-loss CHECKPOINT --output ...` writes one).*"], None
    tasks = [t for t in TASKS if any(t in r["tasks"] for r in results.values())]
    lines = ["Mean per-token loss (nats) of the benchmarks' reference solutions given their prompts, in code "
             "space; lower is better. Unlike pass@k it separates models at any scale.", "",
             "| run | objective | separation | " + " | ".join(tasks) + " |",
             "|---|---|---|" + "---:|" * len(tasks)]
    for name, r in results.items():
        cells = [f"{r['tasks'][t]['loss']:.4f}" if t in r["tasks"] and r["tasks"][t]["loss"] is not None else "-"
                 for t in tasks]
        lines.append(f"| `{name}` | {r.get('objective', '?')} | {r.get('separation', '?')} | " + " | ".join(cells)
                     + " |")
    counts = "; ".join(f"{t}: {max(r['tasks'][t]['problems'] for r in results.values() if t in r['tasks'])} "
                       "problems" for t in tasks)
    lines += ["", f"Scored over {counts}."]
    notes = sorted({n for r in results.values() for n in r.get("notes", [])})
    lines += [f"*{n}*" for n in notes]
    chart = plot_losses(results, tasks, png)
    if chart:
        lines += ["", f"![held-out code loss]({rel(chart)})"]
    return lines, chart


def plot_losses(results: dict, tasks: Sequence[str], output: str) -> Optional[str]:
    """Grouped bars: one group per run, one bar per benchmark."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    width = 0.8 / max(1, len(tasks))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 2), 3.4))
    for i, task in enumerate(tasks):
        values = [results[n]["tasks"].get(task, {}).get("loss") or 0.0 for n in names]
        ax.bar([x + i * width for x in range(len(names))], values, width, label=task)
    ax.set_xticks([x + width * (len(tasks) - 1) / 2 for x in range(len(names))])
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("code loss (nats/token)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    lows = [v["loss"] for r in results.values() for v in r["tasks"].values() if v.get("loss")]
    if lows:  # the differences are small at tiny scale: start the axis near the smallest bar
        ax.set_ylim(max(0.0, min(lows) - 0.5 * (max(lows) - min(lows) + 0.05)), max(lows) * 1.02 + 0.01)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output
