"""The model card (``README.md``) of an export: what the model is, how it was trained and scored, how to use it.

Sections: architecture (from the run info), separation and objective, data (the training run's settings in
``t2c_run.json``), evaluation results when the run has them, and a usage snippet (the tests run it).

Evaluation results are read from the pipeline's run-directory layout (:mod:`megatron_t2c.pipeline.main_job`)::

    RUN_DIR/train/<name>/checkpoints/iter_N     the checkpoint exported
    RUN_DIR/eval/<name>/<task>/<mode>.summary.json

or from ``eval_dir`` (``--eval-dir``: a directory of ``<task>/<mode>.summary.json``).
"""

from __future__ import annotations

import glob
import json
import os
from typing import Optional

from megatron_t2c.utils.atomic import atomic_open

#: Training settings shown in the data section, when the run info has them (``t2c_run.json`` ``config``: the
#: run's sections ``data``, ``training``, ``checkpoint``, or flat).
_DATA_KEYS = ("data_path", "split", "train_iters", "train_samples", "epochs", "global_batch_size",
              "micro_batch_size", "lr", "min_lr", "lr_decay_style", "precision", "seed", "init_from",
              "converted_from")
_SEPARATION = {"none": "none: one embedding row per token for text and code",
               "partial": "partial (PES): code-modality copies of Python grammar tokens",
               "full": "full (FES): a code-modality copy of every ordinary token",
               "auto": "auto: code copies of the tokens chosen from the data"}


def _pipeline_run(checkpoint: str) -> Optional[tuple[str, str]]:
    """``(RUN_DIR, name)`` of a checkpoint under ``RUN_DIR/train/<name>/...``, else None."""
    parts = os.path.abspath(checkpoint).split(os.sep)
    if "train" not in parts:
        return None
    k = len(parts) - 1 - parts[::-1].index("train")
    if k + 1 >= len(parts):
        return None
    return os.sep.join(parts[:k]) or os.sep, parts[k + 1]


def discover_eval_dir(checkpoint: str) -> Optional[str]:
    """``RUN_DIR/eval/<name>`` for a checkpoint under ``RUN_DIR/train/<name>/checkpoints[/iter_N]``, if it exists."""
    run = _pipeline_run(checkpoint)
    candidate = os.path.join(run[0], "eval", run[1]) if run else None
    return candidate if candidate and os.path.isdir(candidate) else None


def evaluation_results(eval_dir: Optional[str]) -> list[tuple[str, str, dict]]:
    """``(task, mode, summary)`` for every ``<task>/<mode>.summary.json`` under ``eval_dir``."""
    if not eval_dir or not os.path.isdir(eval_dir):
        return []
    out = []
    for path in sorted(glob.glob(os.path.join(eval_dir, "*", "*.summary.json"))):
        try:
            with open(path, encoding="utf-8") as fh:
                summary = json.load(fh)
        except (OSError, json.JSONDecodeError):
            continue
        out.append((os.path.basename(os.path.dirname(path)), os.path.basename(path)[:-len(".summary.json")], summary))
    return out


def _run_settings(run: dict) -> dict:
    flat = {k: v for k, v in run.items() if not isinstance(v, dict)}
    for section in ("data", "training", "checkpoint"):
        flat.update(run.get(section) or {})
    return flat


def _dataset_lines(data_path) -> list[str]:
    """Documents and tokens of each dataset prefix, from preprocessing's ``PREFIX.summary.json`` when present."""
    words = data_path.split() if isinstance(data_path, str) else list(data_path or [])
    lines = []
    for prefix in words:
        try:
            float(prefix)
            continue  # a blend weight
        except ValueError:
            pass
        try:
            with open(prefix + ".summary.json", encoding="utf-8") as fh:
                summary = json.load(fh)
        except (OSError, json.JSONDecodeError):
            continue
        counts = ", ".join(f"{summary[k]:,} {k}" for k in ("documents", "tokens") if isinstance(summary.get(k), int))
        if counts:
            lines.append(f"- dataset `{os.path.basename(prefix)}`: {counts}")
    return lines


def _eval_table(results: list[tuple[str, str, dict]]) -> list[str]:
    keys = sorted({k for _, _, s in results for k in s if "pass@" in k},
                  key=lambda k: (k.count("_"), k.split("@")[0], int(k.split("@")[1])))
    lines = ["| task | mode | samples | " + " | ".join(keys) + " |", "|---|---|---|" + "---|" * len(keys)]
    for task, mode, s in results:
        cells = [f"{100 * s[k]:.2f}" if isinstance(s.get(k), (int, float)) else "-" for k in keys]
        lines.append(f"| {task} | {mode} | {s.get('samples', '-')} | " + " | ".join(cells) + " |")
    return lines


def usage_snippet(model_dir: str, fmt: str, remote_code: bool, max_new_tokens: int, hf_tokenizer: bool = False) -> str:
    """Python that loads the export and writes a function (through ``pipeline("text-generation")``).
    ``hf_tokenizer``: the export carries a backbone's Hugging Face tokenizer, which decodes the normalised text."""
    prompt = ('f"[sos] {signature} [descr] {description} [python]"' if fmt == "pycodegpt"
              else 'f"[descr] {description} [python] {signature}"')
    if hf_tokenizer:
        load = ("tokenizer = AutoTokenizer.from_pretrained(model_dir)  # the backbone's tokenizer + the markers\n"
                "# (it decodes the normalised text; megatron_t2c.mrpt.normalise.denormalise makes it Python source)")
        shown = "print(signature + body)  # the function: [new_line] [indent] [dedent] mark its lines"
    else:
        load = "tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)  # decodes to Python source"
        shown = "print(signature + body)  # the whole function, as Python source"
    return f'''from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

model_dir = {model_dir!r}
{load}
model = AutoModelForCausalLM.from_pretrained(model_dir{", trust_remote_code=True" if remote_code else ""})
generate = pipeline("text-generation", model=model, tokenizer=tokenizer)

description, signature = "Return the sum of a and b.", "def add(a, b):"
prompt = {prompt}
body = generate(prompt, return_full_text=False, max_new_tokens={max_new_tokens})[0]["generated_text"]
{shown}
'''


def model_card(model_dir: str, checkpoint: str, info: dict, arch, summary, eval_dir: Optional[str] = None) -> str:
    """The text of ``README.md`` (see the module docstring)."""
    run = info.get("config", {}) or {}
    run_of = _pipeline_run(checkpoint)
    name = run_of[1] if run_of else os.path.basename(os.path.normpath(model_dir))
    fmt, objective, separation = info.get("format", "pangu"), info.get("objective", "?"), info.get("separation", "none")
    results = evaluation_results(eval_dir or discover_eval_dir(checkpoint))
    hf_tokenizer = (info.get("tokenizer") or {}).get("kind") == "huggingface"
    vocabulary = ("the backbone's Hugging Face tokenizer, the markers added as special tokens" if hf_tokenizer
                  else "SentencePiece BPE, fixed marker ids")
    decoding = ("the tokenizer decodes it as written (`megatron_t2c.mrpt.normalise.denormalise` gives Python)"
                if hf_tokenizer else "the tokenizer decodes it to Python source (`decode(ids, raw=True)` keeps the "
                "normalised text)")
    lines = ["---", "library_name: transformers", "pipeline_tag: text-generation", "tags:", "- code", "- python",
             "- text-to-code", "- megatron_t2c", "---", "", f"# {name}", "",
             f"A text-to-code GPT model trained with megatron_t2c ({info.get('stage', '?')} stage, iteration "
             f"{info.get('iteration', '?')}): given a description and a Python signature it writes the function.",
             "", "## Architecture", "",
             "| | |", "|---|---|",
             f"| class | `{summary.model_class}`" + (" (remote code: `trust_remote_code=True`)" if summary.remote_code
                                                     else " (stock transformers)") + " |",
             f"| parameters | {summary.parameters:,} |",
             f"| layers / hidden / heads | {arch.num_layers} / {arch.hidden_size} / {arch.num_attention_heads} |",
             f"| MLP width | {arch.ffn_hidden_size} |",
             f"| positions | {arch.position_embedding_type}, context {arch.seq_length} tokens |",
             f"| vocabulary | {arch.vocab_size} ids in megatron_t2c ({vocabulary}) |",
             f"| weights | {summary.bytes:,} bytes in {', '.join(f'`{f}`' for f in summary.weight_files)} |",
             "", "## Separation and objective", "",
             f"- sample format: `{fmt}` (" + ("`[sos] signature [descr] docstring [python] body [eoc]`" if fmt ==
                                             "pycodegpt" else "`[descr] docstring [python] code [eoc]`") + ")",
             f"- modality separation: {_SEPARATION.get(separation, separation)}"
             + (f" ({len(info.get('separated_ids') or [])} tokens with a code row)" if separation != "none" else ""),
             f"- objective: `{objective}`" + (" (the prompt prefix attends both ways)" if objective == "prefix-code"
                                               else ""),
             f"- code is written whitespace-normalised (`[new_line] [indent] [dedent]`); {decoding}",
             "", "## Data", ""]
    settings = _run_settings(run)
    shown = [(k, settings[k]) for k in _DATA_KEYS if settings.get(k) not in (None, "", [])]
    lines += [f"- `{k}`: {json.dumps(v) if not isinstance(v, str) else v}" for k, v in shown] or \
        ["- the run info records no training settings (an imported or hand-made checkpoint)"]
    lines += _dataset_lines(settings.get("data_path"))
    lines.append(f"- tokenizer sha256: `{(info.get('tokenizer') or {}).get('sha256') or '?'}`")
    lines += ["", "## Evaluation", ""]
    if results:
        lines += ["pass@k in % (zero-shot; `incremental_*`: the paper's incremental prompts):", ""]
        lines += _eval_table(results)
    else:
        lines.append("No evaluation results were found for this run.")
    max_new = max(8, min(128, arch.seq_length // 2))
    lines += ["", "## Usage", "", "```python", usage_snippet(model_dir, fmt, summary.remote_code, max_new, hf_tokenizer).rstrip(),
              "```", "", "Generation is greedy and stops at `[eoc]` (`generation_config.json`).  Serving stacks "
              "read `tokenizer.json` (same ids; raw normalised text on decode).", ""]
    return "\n".join(lines)


def write_model_card(directory: str, checkpoint: str, info: dict, arch, summary, eval_dir: Optional[str] = None,
                     name: Optional[str] = None) -> str:
    """Write ``directory/README.md``; ``name``: the export's path as the card names it (default ``directory``)."""
    path = os.path.join(directory, "README.md")
    with atomic_open(path) as fh:
        fh.write(model_card(name or directory, checkpoint, info, arch, summary, eval_dir))
    return path
