"""Checkpoint correlation between test sets (paper Table 4).

Evaluate a series of checkpoints (e.g. every saved iteration of one run) on several test sets; if the
test sets rank checkpoints alike, the Pearson correlation of their pass@1 across the series is high, and a
cheap development set can stand in for the test set when choosing a checkpoint.  The paper compares
HumanEval, MBPP dev (task ids 511-600) and MBPP test (task ids 11-510).

**Inputs**, any mix (:func:`merge_tables`): a directory of ``--summary`` JSONs (:func:`collect_directory`),
single summaries ``CHECKPOINT:TESTSET=PATH`` (:func:`parse_summary_specs`) or a JSON table
``{checkpoint: {testset: value}}``; the value is a summary's ``pass@1`` or another key (:func:`read_metric`).

**Output**: for every pair of test sets, Pearson's r over the checkpoints that have both values, with n
(:func:`correlation_matrix`, where r is undefined is explained there); several models, as the paper's
Table 4: :func:`average_across_runs`.  MBPP dev and test by task id: :data:`MBPP_SPLIT_RANGES`.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

__all__ = ["DEFAULT_TESTSETS", "MBPP_SPLIT_RANGES", "mbpp_split_of", "read_metric", "collect_directory",
           "parse_summary_specs", "merge_tables", "pearson", "correlation_matrix", "format_markdown", "natural_key",
           "average_across_runs", "format_runs_markdown"]

#: The paper's Table 4 test sets, in this order in the outputs when present.
DEFAULT_TESTSETS = ("humaneval", "mbpp_dev", "mbpp_test")
#: MBPP task-id ranges (inclusive) by test-set name (``megatron_t2c.evaluation.tasks.mbpp.SPLITS``:
#: ``validation`` = dev).
#: MBPP dev needs samples of MBPP task ids 511-600: ``megatron_t2c.evaluation.tasks.mbpp.load_mbpp(path,
#: split="validation")`` gives those problems; see :func:`mbpp_split_of`.
MBPP_SPLIT_RANGES = {"mbpp_test": (11, 510), "mbpp_dev": (511, 600)}


def mbpp_split_of(task_id: str | int) -> Optional[str]:
    """``"mbpp_test"``, ``"mbpp_dev"`` or None for an MBPP task id (``"MBPP/523"`` or ``523``)."""
    number = int(str(task_id).rsplit("/", 1)[-1].split("#", 1)[0])
    for name, (lo, hi) in MBPP_SPLIT_RANGES.items():
        if lo <= number <= hi:
            return name
    return None


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically: checkpoints are ordered naturally (``iter_200``
    before ``iter_1000``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def read_metric(path: str, metric: str = "pass@1") -> Optional[float]:
    """``metric`` of one summary JSON, or None when the summary lacks it.

    The value read from a summary is ``pass@1`` by default (``--metric`` picks another key, e.g.
    ``incremental_pass@1``).
    """
    with open(path, encoding="utf-8") as fh:
        summary = json.load(fh)
    value = summary.get(metric)
    return None if value is None else float(value)


def collect_directory(root: str, *, mode: str = "greedy", metric: str = "pass@1") -> dict[str, dict[str, float]]:
    """``{checkpoint: {testset: value}}`` from ``root/<checkpoint>/<testset>.summary.json`` and
    ``root/<checkpoint>/<testset>/<mode>.summary.json`` (the ``--summary`` JSON that ``tasks/evaluate.py
    execute`` writes; ``mode`` defaults to ``greedy``)."""
    table: dict[str, dict[str, float]] = {}
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root} is not a directory")
    for ckpt in sorted(os.listdir(root), key=natural_key):
        base = os.path.join(root, ckpt)
        if not os.path.isdir(base):
            continue
        found: dict[str, str] = {}
        for path in glob.glob(os.path.join(base, "*.summary.json")):
            found[os.path.basename(path)[: -len(".summary.json")]] = path
        for path in glob.glob(os.path.join(base, "*", f"{mode}.summary.json")):
            found[os.path.basename(os.path.dirname(path))] = path
        for testset, path in found.items():
            value = read_metric(path, metric)
            if value is not None:
                table.setdefault(ckpt, {})[testset] = value
    return table


def parse_summary_specs(specs: Iterable[str], metric: str = "pass@1") -> dict[str, dict[str, float]]:
    """``{checkpoint: {testset: value}}`` from ``CHECKPOINT:TESTSET=PATH`` strings."""
    table: dict[str, dict[str, float]] = {}
    for spec in specs:
        key, sep, path = spec.partition("=")
        ckpt, colon, testset = key.rpartition(":")
        if not sep or not colon or not ckpt or not testset or not path:
            raise ValueError(f"bad --summary {spec!r}: expected CHECKPOINT:TESTSET=PATH")
        value = read_metric(path, metric)
        if value is None:
            raise ValueError(f"{path} has no {metric!r}")
        table.setdefault(ckpt, {})[testset] = value
    return table


def merge_tables(*tables: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Merge ``{checkpoint: {testset: value}}`` tables, in order: a later value for the same checkpoint and
    test set wins.  The inputs may be any mix of :func:`collect_directory` (a directory ``ROOT``),
    :func:`parse_summary_specs` (single summaries, ``CHECKPOINT:TESTSET=PATH``) and a JSON table
    ``{checkpoint: {testset: value}}`` (values already extracted)."""
    out: dict[str, dict[str, float]] = {}
    for table in tables:
        for ckpt, values in table.items():
            out.setdefault(str(ckpt), {}).update({str(k): float(v) for k, v in values.items() if v is not None})
    return out


def pearson(x: Sequence[float], y: Sequence[float]) -> tuple[Optional[float], Optional[str]]:
    """``(r, None)``, or ``(None, reason)`` when r is undefined (fewer than 2 points, a constant series)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError("series of different lengths")
    if a.size < 2:
        return None, f"{a.size} shared checkpoint(s): need at least 2"
    da, db = a - a.mean(), b - b.mean()
    sa, sb = math.sqrt(float(da @ da)), math.sqrt(float(db @ db))
    scale = max(1.0, float(np.abs(a).max()), float(np.abs(b).max()))
    constant = [name for name, s in (("first", sa), ("second", sb)) if s <= 1e-12 * scale * math.sqrt(a.size)]
    if constant:
        return None, "constant series (zero variance): correlation undefined"
    r = float(da @ db) / (sa * sb)
    return max(-1.0, min(1.0, r)), None


def correlation_matrix(table: Mapping[str, Mapping[str, float]],
                       testsets: Optional[Sequence[str]] = None) -> dict:
    """Pairwise Pearson r between test sets over the checkpoints of ``table``.

    For every pair of test sets, Pearson's r over the checkpoints that have both values, with n.  r is
    undefined (``null``, with a note) when fewer than two checkpoints are shared or when either series is
    constant over them (zero variance: all tiny-scale models score 0.0, for instance).
    """
    checkpoints = sorted(table, key=natural_key)
    present = {t for values in table.values() for t in values}
    if testsets is None:
        testsets = [t for t in DEFAULT_TESTSETS if t in present] + sorted(present - set(DEFAULT_TESTSETS))
    testsets = list(testsets)
    matrix: list[list[Optional[float]]] = []
    counts: list[list[int]] = []
    notes: list[str] = []
    for i, a in enumerate(testsets):
        row, nrow = [], []
        for j, b in enumerate(testsets):
            shared = [c for c in checkpoints if a in table[c] and b in table[c]]
            r, reason = pearson([table[c][a] for c in shared], [table[c][b] for c in shared])
            row.append(r)
            nrow.append(len(shared))
            if reason and j >= i:
                notes.append(f"{a} vs {b}: {reason}" if a != b else f"{a}: {reason}")
        matrix.append(row)
        counts.append(nrow)
    constant = [t for t in testsets
                if len({table[c][t] for c in checkpoints if t in table[c]}) == 1]
    return {"testsets": testsets, "checkpoints": checkpoints,
            "values": {c: {t: table[c].get(t) for t in testsets} for c in checkpoints},
            "pearson": matrix, "n": counts, "constant_series": constant, "notes": notes}


def format_markdown(result: Mapping, digits: int = 3) -> str:
    """The matrix and the per-checkpoint values as markdown tables."""
    testsets = result["testsets"]
    lines = ["| Pearson r (n) | " + " | ".join(testsets) + " |", "|---|" + "---:|" * len(testsets)]
    for name, row, nrow in zip(testsets, result["pearson"], result["n"]):
        cells = [("undefined" if r is None else f"{r:.{digits}f}") + f" ({n})" for r, n in zip(row, nrow)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| checkpoint | " + " | ".join(testsets) + " |", "|---|" + "---:|" * len(testsets)]
    for ckpt in result["checkpoints"]:
        values = result["values"][ckpt]
        lines.append(f"| {ckpt} | " + " | ".join("–" if values[t] is None else f"{values[t]:.4f}"
                                                 for t in testsets) + " |")
    if result["notes"]:
        lines += ["", "Notes:"] + [f"- {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"


def average_across_runs(results: Mapping[str, Mapping]) -> dict:
    """Per model ``correlation_matrix`` results -> ``{"testsets", "pearson", "models", "per_model"}``: for
    each pair of test sets the mean of the models' defined r (None where no model defines it) and how many
    models it averages.

    Several models (the paper's Table 4 averages across models): one series per model (e.g. one directory
    per run); this gives each model's matrix and, per pair of test sets, the arithmetic mean of the models'
    r where it is defined (with the number of models averaged).
    """
    if not results:
        raise ValueError("no runs to average")
    present = {t for result in results.values() for t in result["testsets"]}
    testsets = [t for t in DEFAULT_TESTSETS if t in present] + sorted(present - set(DEFAULT_TESTSETS))
    matrix: list[list[Optional[float]]] = []
    models: list[list[int]] = []
    for a in testsets:
        row, mrow = [], []
        for b in testsets:
            values = []
            for result in results.values():
                names = result["testsets"]
                if a in names and b in names:
                    r = result["pearson"][names.index(a)][names.index(b)]
                    if r is not None:
                        values.append(r)
            row.append(float(np.mean(values)) if values else None)
            mrow.append(len(values))
        matrix.append(row)
        models.append(mrow)
    per_model = {name: {f"{a}~{b}": result["pearson"][i][j]
                        for i, a in enumerate(result["testsets"]) for j, b in enumerate(result["testsets"]) if i < j}
                 for name, result in results.items()}
    return {"testsets": testsets, "pearson": matrix, "models": models, "per_model": per_model}


def format_runs_markdown(average: Mapping, digits: int = 3) -> str:
    """Each model's r per pair of test sets and their average, as one markdown table."""
    pairs = [(i, j) for i in range(len(average["testsets"])) for j in range(len(average["testsets"])) if i < j]
    names = [f"{average['testsets'][i]} ~ {average['testsets'][j]}" for i, j in pairs]
    lines = ["| model | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]

    def cell(r: Optional[float]) -> str:
        return "undefined" if r is None else f"{r:.{digits}f}"

    for model, values in average["per_model"].items():
        keys = [f"{average['testsets'][i]}~{average['testsets'][j]}" for i, j in pairs]
        lines.append(f"| {model} | " + " | ".join(cell(values.get(k)) for k in keys) + " |")
    lines.append("| **average** | " + " | ".join(
        f"{cell(average['pearson'][i][j])} ({average['models'][i][j]})" for i, j in pairs) + " |")
    return "\n".join(lines) + "\n"
