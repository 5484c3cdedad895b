#!/usr/bin/env python3
"""Data-pipeline throughput on the standard library, each figure beside its anchor, in one run.

1. Extraction.  Anchor: a bare tree-sitter walk in one process (read every file, parse it, visit every
   node with a TreeCursor; no filtering, cleaning or normalisation).  Measured: the whole extraction
   (``tools/extract_functions.py``: filters, MD5 and function-level dedup, comment/docstring removal,
   Python's own parse of every file, normalisation, JSONL) with 1 and with ``--workers`` workers.
   Goal: with 2 workers, no slower than the anchor.
2. Preprocessing.  Anchor: the raw single-process SentencePiece ``encode`` rate (one thread) on the very
   texts the datasets hold (the formatted samples).  Measured: ``tools/preprocess_data.py`` with 1 and
   with ``--workers`` workers, JSON parsing, formatting and ``.bin/.idx`` writing included.
   Goal: with 2 workers, at least 1.6x the anchor.

Prints a table and writes the figures as JSON (``--output``).  The tokenizer is trained untimed.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass


from megatron_t2c.utils.dataclass_flags import option, parse_config
from megatron_t2c.data.corpus_extraction import ExtractConfig, extract_corpus
from megatron_t2c.data.source_files import discover


@dataclass(kw_only=True)
class BenchConfig:
    """Benchmark settings."""

    workers: int = option(2, help="workers for the parallel runs")
    vocab_size: int = option(8000, help="tokenizer vocabulary (trained untimed)")
    output: str | None = option(None, help="write the figures as JSON here")
    work_dir: str | None = option(None, help="keep intermediate files here (default: a temporary directory)")


def bare_tree_sitter_walk() -> dict:
    """The extraction anchor: parse every stdlib file and visit every node, in one process."""
    import tree_sitter_python
    from tree_sitter import Language, Parser

    parser = Parser(Language(tree_sitter_python.language()))
    files = discover([])
    start = time.perf_counter()
    nodes = 0
    for f in files:
        with open(f.path, "rb") as fh:
            cursor = parser.parse(fh.read()).walk()
        while True:
            nodes += 1
            if cursor.goto_first_child() or cursor.goto_next_sibling():
                continue
            while cursor.goto_parent():
                if cursor.goto_next_sibling():
                    break
            else:
                break
    seconds = time.perf_counter() - start
    return {"files": len(files), "nodes": nodes, "seconds": round(seconds, 3),
            "files_per_s": round(len(files) / seconds, 1)}


def run_extraction(work: str, workers: int) -> dict:
    config = ExtractConfig(output=os.path.join(work, f"functions.w{workers}.jsonl"), workers=workers,
                           progress=False)
    report = extract_corpus(config)
    return {k: report[k] for k in ("seconds", "files_per_s", "functions_per_s", "files_seen", "records")}


def raw_encode_rate(records_path: str, model: str, fmt: str) -> dict:
    """The preprocessing anchor: one-thread SentencePiece encode of the formatted sample texts."""
    import sentencepiece as spm

    from megatron_t2c.mrpt.formats import format_record, included, sample_text

    with open(records_path, encoding="utf-8") as fh:
        texts = [sample_text(format_record(r, fmt)) for r in map(json.loads, fh) if included(r, "all")]
    sp = spm.SentencePieceProcessor(model_file=model, num_threads=1)
    start = time.perf_counter()
    ids = sp.encode(texts, num_threads=1)
    seconds = time.perf_counter() - start
    tokens = sum(map(len, ids))
    return {"texts": len(texts), "tokens": tokens, "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens / seconds)}


def run_preprocess(records_path: str, model: str, work: str, fmt: str, workers: int) -> dict:
    from megatron_t2c.data.preprocess import PreprocessConfig, preprocess

    config = PreprocessConfig(input=records_path, tokenizer_model=model, format=fmt, include="all",
                              output_prefix=os.path.join(work, f"{fmt}.w{workers}"), workers=workers,
                              max_seq_length=1 << 30, progress=False)
    summary = preprocess(config, log=None)
    return {"seconds": summary["seconds"]["run"], "tokens": summary["tokens"],
            "documents": summary["documents"], "tokens_per_s": summary["tokens_per_s"]}


def main(argv=None) -> int:
    cfg = parse_config(BenchConfig, argv, description=__doc__,
                       epilog="example:\n  .venv/bin/python benchmarks/data_pipeline.py --output bench.json")
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        work = cfg.work_dir or tmp
        os.makedirs(work, exist_ok=True)
        print(f"standard library, {os.cpu_count()} cores; this takes about two minutes", file=sys.stderr)
        anchor = bare_tree_sitter_walk()
        extract_1 = run_extraction(work, 1)
        extract_n = run_extraction(work, cfg.workers)
        records = os.path.join(work, f"functions.w{cfg.workers}.jsonl")
        from megatron_t2c.tokenizer.train import train_tokenizer

        train_tokenizer(records, os.path.join(work, "tok"), vocab_size=cfg.vocab_size)
        model = os.path.join(work, "tok.model")
        encode = raw_encode_rate(records, model, "pangu")
        pre_1 = run_preprocess(records, model, work, "pangu", 1)
        pre_n = run_preprocess(records, model, work, "pangu", cfg.workers)
    figures = {"extraction": {"anchor_bare_tree_sitter_walk_1_process": anchor, "workers_1": extract_1,
                              f"workers_{cfg.workers}": extract_n,
                              "ratio_anchor_time_over_extraction_time": round(anchor["seconds"] / extract_n["seconds"], 2)},
               "preprocess": {"anchor_raw_sentencepiece_encode_1_thread": encode, "workers_1": pre_1,
                              f"workers_{cfg.workers}": pre_n,
                              "ratio_over_anchor": round(pre_n["tokens_per_s"] / encode["tokens_per_s"], 2)}}
    w = cfg.workers
    rows = [
        ("bare tree-sitter walk, 1 process (anchor)", f"{anchor['seconds']:.2f} s", f"{anchor['files_per_s']:.0f} files/s", ""),
        ("extraction, 1 worker", f"{extract_1['seconds']:.2f} s", f"{extract_1['files_per_s']:.0f} files/s",
         f"{extract_1['functions_per_s']:.0f} functions/s"),
        (f"extraction, {w} workers", f"{extract_n['seconds']:.2f} s", f"{extract_n['files_per_s']:.0f} files/s",
         f"{extract_n['functions_per_s']:.0f} functions/s"),
        ("raw SentencePiece encode, 1 thread (anchor)", f"{encode['seconds']:.2f} s", f"{encode['tokens_per_s']:,} tokens/s", ""),
        ("preprocess, 1 worker", f"{pre_1['seconds']:.2f} s", f"{pre_1['tokens_per_s']:,.0f} tokens/s", ""),
        (f"preprocess, {w} workers", f"{pre_n['seconds']:.2f} s", f"{pre_n['tokens_per_s']:,.0f} tokens/s", ""),
    ]
    print("\n| stage | time | rate | |\n|---|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    e = figures["extraction"]["ratio_anchor_time_over_extraction_time"]
    p = figures["preprocess"]["ratio_over_anchor"]
    print(f"\nextraction with {w} workers takes {1 / e:.2f}x the anchor's time (goal <= 1.00x)")
    print(f"preprocess with {w} workers runs at {p:.2f}x the raw encode rate (goal >= 1.60x)")
    if cfg.output:
        with open(cfg.output, "w", encoding="utf-8") as fh:
            json.dump(figures, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
