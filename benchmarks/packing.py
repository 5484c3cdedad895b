#!/usr/bin/env python3
"""Index build time of whole-instance packing against megatron-core's ``GPTDataset``, on the same documents.

Writes a megatron indexed dataset of ``--documents`` synthetic documents (default 10 million; lengths drawn
from a log-normal with median ``--median`` tokens, clipped to ``[8, 2 * seq]`` so that some are longer
than a row and get dropped).  Only the ``.idx`` is real: the ``.bin`` is a sparse file, since neither
index build reads a token.  Then, in this one process, each dataset class is built through
:func:`megatron_t2c.data.gpt_datasets.build_datasets` (megatron's ``BlendedMegatronDatasetBuilder``) for one
epoch into an empty cache directory, ``--repeats`` times, and the best wall times are printed side by
side with their ratio (goal: whole-instance packing at most 2x ``GPTDataset``), with the packing figures.

    python benchmarks/packing.py                       # 10M documents
    python benchmarks/packing.py --documents 200000    # a quick run
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np


def write_synthetic_dataset(prefix: str, documents: int, median: int, seq_length: int, seed: int) -> np.ndarray:
    """``PREFIX.idx`` for ``documents`` documents of synthetic lengths and a sparse ``PREFIX.bin``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import _IndexWriter

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(median), 0.9, documents), 8, 2 * seq_length).astype(np.int32)
    with _IndexWriter(prefix + ".idx", np.uint16) as writer:
        writer.write(lengths, None, np.arange(documents + 1, dtype=np.int64))
    with open(prefix + ".bin", "wb") as fh:
        fh.truncate(int(lengths.sum(dtype=np.int64)) * 2)
    return lengths


def build_seconds(prefix: str, packing: str, seq_length: int, cache: str, tokenizer) -> tuple[float, object]:
    from megatron_t2c.data.gpt_datasets import build_datasets

    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    train, _, _ = build_datasets([prefix], None, split="100,0,0", seq_length=seq_length, sizes=[None, None, None],
                                 seed=1234, tokenizer=tokenizer, cache_path=cache, packing=packing)
    return time.perf_counter() - start, train


class _Tokenizer:
    """What megatron's dataset config reads of a tokenizer (no model file is needed to build an index)."""

    vocab_size, eod, pad = 32000, 6, 0
    unique_identifiers = {"class": "synthetic"}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=10_000_000)
    parser.add_argument("--median", type=int, default=180, help="median document length in tokens")
    parser.add_argument("--seq-length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    from megatron_t2c.data.packing import packing_stats

    work = tempfile.mkdtemp(prefix="t2c-packing-bench-")
    try:
        prefix = os.path.join(work, "synthetic")
        lengths = write_synthetic_dataset(prefix, args.documents, args.median, args.seq_length, seed=0)
        times: dict[str, list[float]] = {"continuous": [], "whole": []}
        datasets = {}
        for _ in range(args.repeats):
            for packing in ("continuous", "whole"):  # alternated, so that load changes hit both alike
                seconds, datasets[packing] = build_seconds(prefix, packing, args.seq_length,
                                                           os.path.join(work, f"cache-{packing}"), _Tokenizer())
                times[packing].append(seconds)
        gpt, whole = min(times["continuous"]), min(times["whole"])
        stats = datasets["whole"].stats
        result = {"documents": args.documents, "tokens": int(lengths.sum(dtype=np.int64)),
                  "seq_length": args.seq_length, "gpt_dataset_seconds": round(gpt, 3),
                  "packed_dataset_seconds": round(whole, 3), "ratio": round(whole / gpt, 3),
                  "gpt_dataset_rows": len(datasets["continuous"]), "packed_rows": len(datasets["whole"]),
                  "packing": stats, "all_seconds": times, "cpus": os.cpu_count(),
                  "load_average": os.getloadavg()}
        check = packing_stats(lengths, args.seq_length, 1234)
        assert check.rows == stats["rows"], "the dataset's figures must equal a direct packing of the lengths"
        print(f"index build for {args.documents:,} documents ({result['tokens']:,} tokens), rows of "
              f"{args.seq_length} tokens, best of {args.repeats}:")
        print(f"  {'GPTDataset (continuous, megatron-core)':42} {gpt:8.2f} s   {result['gpt_dataset_rows']:>12,} rows")
        print(f"  {'PackedDocumentDataset (whole documents)':42} {whole:8.2f} s   {result['packed_rows']:>12,} rows")
        print(f"  ratio {whole / gpt:.2f} (goal <= 2); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"  packing: {check.describe()}")
        if args.output:
            from megatron_t2c.utils.atomic import write_json

            write_json(args.output, result)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
