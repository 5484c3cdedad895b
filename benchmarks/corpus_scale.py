#!/usr/bin/env python3
"""Corpus-scale data processing (issue 9): rank scaling and peak memory, in one run.

1. Scaling.  ``tools/extract_functions.py`` on the standard library (files/s) and
   ``tools/preprocess_data.py`` on its records (tokens/s), each as a sharded run with 1 rank and with
   ``--ranks`` ranks (one worker per rank, merge included), on the same input.  Goal: >= 1.8x from 1 to 2
   ranks on a 2-core machine.  The single-process (unsharded) run is shown as the anchor; every sharded
   output is checked byte-identical to it.  Each run is a fresh process of the tool; times are the
   tool's own (report ``seconds``, summary ``seconds.run``: imports and model loading excluded).
2. Memory.  Peak RSS (``ru_maxrss`` of a fresh process, one worker) of extraction and preprocessing on a
   corpus and on 10 renamed copies of it (10x files, records and documents).  Goal: flat (<= 1.10x).

Prints a table and writes the figures as JSON (``--output``).
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


from megatron_t2c.utils.dataclass_flags import option, parse_config
from megatron_t2c.data.source_files import stdlib_root

RSS_DIRS = ("email", "json", "http", "urllib", "html", "wsgiref", "concurrent", "logging", "importlib")


@dataclass(kw_only=True)
class BenchConfig:
    """Benchmark settings."""

    ranks: int = option(2, help="ranks for the parallel runs")
    repeats: int = option(3, help="interleaved repetitions of the 1-rank and N-rank runs (best of each)")
    vocab_size: int = option(8000, help="tokenizer vocabulary (trained untimed)")
    copies: int = option(10, help="replication factor of the memory test")
    output: str | None = option(None, help="write the figures as JSON here")
    work_dir: str | None = option(None, help="keep intermediate files here (default: a temporary directory)")


REPO = Path(__file__).resolve().parents[1]


def _extract(work: Path, name: str, *args) -> tuple[dict, float]:
    """A fresh ``tools/extract_functions.py`` process; its report's ``seconds`` (discovery to merge)."""
    report = work / f"{name}.json"
    subprocess.run([sys.executable, str(REPO / "tools" / "extract_functions.py"), "--output",
                    str(work / f"{name}.jsonl"), "--rejected-list", str(work / f"{name}.tsv"), "--report",
                    str(report), "--workers", "1", "--no-progress", *map(str, args)],
                   check=True, capture_output=True)
    data = json.loads(report.read_text())
    return data, data["seconds"]


def _preprocess(work: Path, records: Path, model: str, name: str, *args) -> tuple[dict, float]:
    """A fresh ``tools/preprocess_data.py`` process; its summary's ``seconds.run`` (first byte to merge)."""
    summary = work / f"{name}.summary.json"
    subprocess.run([sys.executable, str(REPO / "tools" / "preprocess_data.py"), "--input", str(records),
                    "--tokenizer-model", model, "--output-prefix", str(work / name), "--include", "all",
                    "--workers", "1", "--no-progress", "--index-map", str(work / f"{name}.lines"), "--summary",
                    str(summary), *map(str, args)], check=True, capture_output=True)
    data = json.loads(summary.read_text())
    return data, data["seconds"]["run"]


def _best(runs: list[tuple[dict, float]]) -> tuple[dict, float]:
    return min(runs, key=lambda r: r[1])


def scaling(work: Path, ranks: int, vocab_size: int, repeats: int) -> dict:
    from megatron_t2c.tokenizer.train import train_tokenizer

    out: dict = {}
    single, t_single = _extract(work, "single")
    out["extract_single"] = {"seconds": round(t_single, 3), "files_per_s": round(single["files_seen"] / t_single, 1)}
    runs: dict = {1: [], ranks: []}
    for _ in range(repeats):  # interleaved: a busy neighbour slows both alike
        for n in (1, ranks):
            runs[n].append(_extract(work, f"r{n}", "--ranks", n, "--shard-files", 32))
    for n in (1, ranks):
        report, seconds = _best(runs[n])
        assert filecmp.cmp(work / "single.jsonl", work / f"r{n}.jsonl", shallow=False)
        out[f"extract_{n}_ranks"] = {"seconds": round(seconds, 3),
                                     "files_per_s": round(report["files_seen"] / seconds, 1)}
    records = work / "single.jsonl"
    prefix = work / "tok"
    train_tokenizer(records, prefix, vocab_size=vocab_size)
    model = str(prefix.with_suffix(".model"))
    summary, t_single = _preprocess(work, records, model, "pp_single")
    out["preprocess_single"] = {"seconds": round(t_single, 3), "tokens_per_s": round(summary["tokens"] / t_single)}
    runs = {1: [], ranks: []}
    for _ in range(repeats):
        for n in (1, ranks):
            runs[n].append(_preprocess(work, records, model, f"pp_r{n}", "--ranks", n, "--shard-bytes", 4 << 20))
    for n in (1, ranks):
        summary, seconds = _best(runs[n])
        for ext in (".bin", ".idx", ".lines"):
            assert filecmp.cmp(work / f"pp_single{ext}", work / f"pp_r{n}{ext}", shallow=False)
        out[f"preprocess_{n}_ranks"] = {"seconds": round(seconds, 3),
                                        "tokens_per_s": round(summary["tokens"] / seconds)}
    out["extract_speedup"] = round(out["extract_1_ranks"]["seconds"] / out[f"extract_{ranks}_ranks"]["seconds"], 2)
    out["preprocess_speedup"] = round(out["preprocess_1_ranks"]["seconds"]
                                      / out[f"preprocess_{ranks}_ranks"]["seconds"], 2)
    out["model"] = model
    return out


_RSS = """
import json, sys
from megatron_t2c.{module} import {config}, {func}
{func}({config}(**json.loads(sys.argv[1])){extra})
# VmHWM: this process image's peak RSS (ru_maxrss would also count the forked parent's before exec)
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def _rss_mib(module: str, config: str, func: str, kwargs: dict, extra: str = "") -> float:
    code = _RSS.format(repo=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), module=module,
                       config=config, func=func, extra=extra)
    done = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True,
                          check=True)
    return int(done.stdout.split()[-1]) / 1024


def memory(work: Path, copies: int, model: str) -> dict:
    std = stdlib_root()
    out: dict = {}
    for n in (1, copies):
        root = work / f"x{n}"
        for c in range(n):
            for name in RSS_DIRS:
                for path in (std / name).rglob("*.py"):
                    target = root / f"c{c}" / path.relative_to(std)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    text = re.sub(r"\b(def|class)(\s+)(\w+)", rf"\1\2\3_c{c}", path.read_text(encoding="utf-8"))
                    target.write_text(text + f"\n# copy {c}\n", encoding="utf-8")
        records = work / f"x{n}.jsonl"
        kwargs = {"paths": [str(root)], "output": str(records), "report": str(work / f"x{n}.json"), "workers": 1,
                  "progress": False}
        extract_rss = _rss_mib("data.corpus_extraction", "ExtractConfig", "extract_corpus", kwargs)
        report = json.loads((work / f"x{n}.json").read_text())
        kwargs = {"input": str(records), "tokenizer_model": model, "output_prefix": str(work / f"x{n}"),
                  "include": "all", "progress": False, "index_map": str(work / f"x{n}.lines")}
        preprocess_rss = _rss_mib("data.preprocess", "PreprocessConfig", "preprocess", kwargs, ", log=None")
        out[f"{n}x"] = {"files": report["files_seen"], "records": report["records"],
                        "extract_peak_rss_mib": round(extract_rss, 1), "preprocess_peak_rss_mib": round(preprocess_rss, 1)}
    for stage in ("extract", "preprocess"):
        out[f"{stage}_rss_ratio"] = round(out[f"{copies}x"][f"{stage}_peak_rss_mib"]
                                          / out["1x"][f"{stage}_peak_rss_mib"], 3)
    return out


def main(argv=None) -> int:
    config = parse_config(BenchConfig, argv, description=__doc__, epilog="example:\n  python benchmarks/corpus_scale.py --output corpus_scale.json")
    with tempfile.TemporaryDirectory(prefix="t2c-corpus-scale-") as tmp:
        work = Path(config.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        figures = {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}
        figures["scaling"] = scaling(work, config.ranks, config.vocab_size, config.repeats)
        figures["memory"] = memory(work, config.copies, figures["scaling"].pop("model"))
    s, m, r = figures["scaling"], figures["memory"], config.ranks
    print(f"| run (standard library, 1 worker per rank, merge included; best of {config.repeats}) | time | rate |\n|---|---:|---:|")
    print(f"| extraction, single process (anchor) | {s['extract_single']['seconds']:.2f} s | "
          f"{s['extract_single']['files_per_s']:.0f} files/s |")
    for n in (1, r):
        e = s[f"extract_{n}_ranks"]
        print(f"| extraction, {n} rank(s) | {e['seconds']:.2f} s | {e['files_per_s']:.0f} files/s |")
    print(f"| preprocess, single process (anchor) | {s['preprocess_single']['seconds']:.2f} s | "
          f"{s['preprocess_single']['tokens_per_s'] / 1e6:.2f}M tokens/s |")
    for n in (1, r):
        p = s[f"preprocess_{n}_ranks"]
        print(f"| preprocess, {n} rank(s) | {p['seconds']:.2f} s | {p['tokens_per_s'] / 1e6:.2f}M tokens/s |")
    print(f"speedup 1 -> {r} ranks: extraction {s['extract_speedup']}x, preprocessing {s['preprocess_speedup']}x "
          f"(goal >= 1.8x); load average at start {figures['load_average_at_start'][0]:.1f}")
    print(f"peak RSS 1x -> {config.copies}x: extraction {m['1x']['extract_peak_rss_mib']} -> "
          f"{m[f'{config.copies}x']['extract_peak_rss_mib']} MiB ({m['extract_rss_ratio']}x), preprocessing "
          f"{m['1x']['preprocess_peak_rss_mib']} -> {m[f'{config.copies}x']['preprocess_peak_rss_mib']} MiB "
          f"({m['preprocess_rss_ratio']}x); records {m['1x']['records']} -> {m[f'{config.copies}x']['records']}")
    if config.output:
        with open(config.output, "w", encoding="utf-8") as fh:
            json.dump(figures, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
