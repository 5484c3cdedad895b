"""A summary of a data-pipeline run directory: corpus, tokenizer and datasets, read back from disk.

The datasets are opened with megatron-core's own ``IndexedDataset``, so the numbers in the summary are what
training will see; the first document of each is decoded as an example.  Each dataset's whole-instance
packing (:mod:`megatron_t2c.data.packing`, one epoch of all its documents, rows of ``seq_length`` tokens)
is summarised too: rows, documents per row, padding, rows as a share of the documents (the paper: 18% for
MAPT, 24-26% for MRPT), documents too long for a row.
"""

from __future__ import annotations

import glob
import json
import os
import warnings

from megatron_t2c.utils.atomic import atomic_open, write_json


def _load(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def summarise(run_dir: str, seq_length: int = 1024) -> dict:
    """Collect the reports under ``run_dir/data`` and check each dataset with megatron-core."""
    from megatron_t2c.data.packing import packing_stats

    with warnings.catch_warnings():  # megatron-core warns about optional Apex/Transformer Engine
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_t2c.tokenizer.loading import open_tokenizer

    data = os.path.join(run_dir, "data")
    summary: dict = {"extraction": _load(os.path.join(data, "extract_report.json")),
                     "tokenizer": _load(os.path.join(data, "tokenizer.summary.json")), "datasets": {}}
    model = os.path.join(data, "tokenizer.model")
    tokenizer = open_tokenizer(model) if os.path.exists(model) else None
    for path in sorted(glob.glob(os.path.join(data, "*.summary.json"))):
        report = _load(path)
        if report is None or "idx" not in report:
            continue
        prefix = report["idx"][: -len(".idx")]
        dataset = IndexedDataset(prefix)
        lengths = dataset.sequence_lengths
        entry = {"documents": len(dataset), "tokens": int(lengths.sum()),
                 "mean_tokens": round(float(lengths.mean()), 1) if len(dataset) else 0.0,
                 "max_tokens": int(lengths.max()) if len(dataset) else 0,
                 "format": report.get("format"), "include": report.get("include"),
                 "skipped": report.get("skipped"), "tokens_per_s": report.get("tokens_per_s")}
        if len(dataset):
            entry["packing"] = packing_stats(lengths, seq_length).as_dict()
        if tokenizer is not None and len(dataset):
            entry["example"] = tokenizer.detokenize(dataset[0].tolist())
        summary["datasets"][os.path.basename(prefix)] = entry
    return summary


def format_markdown(summary: dict) -> str:
    """The summary as a Markdown page."""
    lines = ["# Data pipeline summary", ""]
    ex = summary.get("extraction")
    if ex:
        rejected = ", ".join(f"{k} {v}" for k, v in ex["rejected"].items() if v) or "none"
        lines += ["## Corpus", "", "| files seen | kept | rejected | records | text-code | code-only | duplicates dropped |",
                  "|---:|---:|---|---:|---:|---:|---:|",
                  f"| {ex['files_seen']} | {ex['files_kept']} | {rejected} | {ex['records']} | {ex['text_code']} "
                  f"| {ex['code_only']} | {ex['duplicates_dropped']} |", ""]
    tok = summary.get("tokenizer")
    if tok:
        lines += ["## Tokenizer", "", f"SentencePiece {tok['model_type']}, {tok['vocab_size']} pieces, trained on "
                  f"{tok['records']} records in {tok['seconds']} s.", ""]
    if summary["datasets"]:
        lines += ["## Datasets (read back with megatron-core's IndexedDataset)", "",
                  "| dataset | format | include | documents | tokens | mean tokens | max tokens | skipped |",
                  "|---|---|---|---:|---:|---:|---:|---|"]
        for name, d in summary["datasets"].items():
            skipped = ", ".join(f"{k} {v}" for k, v in (d.get("skipped") or {}).items() if v) or "none"
            lines.append(f"| {name} | {d['format']} | {d['include']} | {d['documents']} | {d['tokens']} | "
                         f"{d['mean_tokens']} | {d['max_tokens']} | {skipped} |")
        lines.append("")
        packed = {name: d["packing"] for name, d in summary["datasets"].items() if d.get("packing")}
        if packed:
            lines += ["## Whole-instance packing (one epoch; paper B.3)", "",
                      "| dataset | row tokens | rows | rows / documents | documents per row | padding | dropped |",
                      "|---|---:|---:|---:|---:|---:|---:|"]
            for name, p in packed.items():
                lines.append(f"| {name} | {p['capacity'] - 1} | {p['rows']} | {100 * p['rows_per_document']:.1f}% | "
                             f"{p['documents_per_row']:.2f} | {100 * p['padding_fraction']:.1f}% | {p['dropped']} |")
            lines.append("")
        for name, d in summary["datasets"].items():
            if "example" in d:
                lines += [f"First document of `{name}`:", "", "```", d["example"][:600], "```", ""]
    return "\n".join(lines)


def write_summary(run_dir: str, seq_length: int = 1024) -> tuple[dict, str]:
    """Write ``run_dir/summary.json`` and ``run_dir/summary.md``; return both."""
    summary = summarise(run_dir, seq_length)
    text = format_markdown(summary)
    write_json(os.path.join(run_dir, "summary.json"), summary)
    with atomic_open(os.path.join(run_dir, "summary.md")) as fh:
        fh.write(text)
    return summary, text
