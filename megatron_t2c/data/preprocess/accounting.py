"""Accounting for every input line: bad-line reports, running totals, ``--strict`` and the run's summary.

Every input line is accounted for: the summary's ``lines`` equals ``documents`` plus the sum of
``skipped`` (reason -> count).  Lines left out on purpose are ``excluded_by_include`` and ``too_long``;
bad lines (``blank_line invalid_utf8 invalid_json not_an_object missing_field:NAME wrong_type:NAME
normalise_error empty_code invalid_text``) are also printed with their line numbers (the first few) and
with ``strict`` the first one stops the run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from megatron_t2c.data.preprocess.config import PreprocessConfig
from megatron_t2c.data.preprocess.encode import Chunk
from megatron_t2c.utils.records import LineReport


class StrictError(RuntimeError):
    """A bad input line under ``strict``."""


class InputLineReport(LineReport):
    """A :class:`LineReport` that also remembers the input file of each line it shows."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.first_bad_inputs: list[str] = []

    def bad(self, line_no: int, reason: str, detail: str = "") -> None:
        shown = len(self.first_bad)
        super().bad(line_no, reason, detail)
        if len(self.first_bad) > shown:
            self.first_bad_inputs.append(self.label)


@dataclass
class Totals:
    """Running counts of a run."""

    lines: int = 0
    documents: int = 0
    tokens: int = 0
    input_lines: list = field(default_factory=list)  # lines read from each input


class RunAccounts:
    """What one run counts: its bad-line report, the lines skipped by reason and the running totals."""

    def __init__(self, config: PreprocessConfig, inputs: list[str], log) -> None:
        self.report = InputLineReport(max_shown=config.show_bad, stream=log, label=inputs[0])
        self.skipped: Counter = Counter()
        self.totals = Totals(input_lines=[0] * len(inputs))


def strict_error(line_no: int, reason: str, detail: str, path: str | None) -> StrictError:
    where = f"{path}, line {line_no}" if path else f"line {line_no}"
    return StrictError(f"{where}: {reason}" + (f": {detail}" if detail else "") +
                       " (--strict stops at the first bad line)")


def account(chunk: Chunk, first_line: int, report: LineReport, skipped: Counter, strict: bool,
            path: str | None = None) -> None:
    """Count a chunk's skipped and bad lines (in line order); under ``strict`` the first bad one raises."""
    for index, reason, detail in chunk.bad:
        line_no = first_line + index
        if strict:
            raise strict_error(line_no, reason, detail, path)
        report.bad(line_no, reason, detail)
        skipped[reason] += 1
    skipped.update(chunk.skipped)


def run_summary(config: PreprocessConfig, inputs: list[str], vocab_size: int, dtype, accounts: RunAccounts,
                setup_seconds: float, run_seconds: float) -> dict:
    """The run's summary; everything but ``workers``, ``ranks``, ``shards``, ``seconds`` and the rates is
    the same for any number of workers and ranks."""
    report, skipped, totals = accounts.report, accounts.skipped, accounts.totals
    given = config.input
    if not isinstance(given, str) and len(given) == 1:
        given = given[0]  # one input: a string, as before several were possible
    return {
        "input": given,
        "inputs": [{"path": p, "lines": n} for p, n in zip(inputs, totals.input_lines)],
        "bin": config.output_prefix + ".bin",
        "idx": config.output_prefix + ".idx",
        "index_map": config.index_map,
        "tokenizer_model": config.tokenizer_model,
        "vocab_size": vocab_size,
        "dtype": np.dtype(dtype).name,
        "format": config.format,
        "include": config.include,
        "max_seq_length": config.max_seq_length,
        "workers": config.workers,
        "ranks": 1,
        "shards": 0,
        "lines": totals.lines,
        "documents": totals.documents,
        "tokens": totals.tokens,
        "skipped": dict(sorted(skipped.items())),
        "bad_lines": report.n_bad,
        "first_bad_lines": [{"input": p, "line": n, "reason": r, "detail": d}
                            for p, (n, r, d) in zip(report.first_bad_inputs, report.first_bad)],
        "seconds": {"setup": round(setup_seconds, 4), "run": round(run_seconds, 4)},
        "docs_per_s": round(totals.documents / run_seconds, 1) if run_seconds else None,
        "tokens_per_s": round(totals.tokens / run_seconds, 1) if run_seconds else None,
    }


def format_summary(summary: dict) -> str:
    """A few human-readable lines about a run."""
    skipped = ", ".join(f"{k}={v}" for k, v in summary["skipped"].items()) or "none"
    return (f"wrote {summary['bin']} and {summary['idx']} ({summary['dtype']}): {summary['documents']} documents, "
            f"{summary['tokens']} tokens from {summary['lines']} lines\n"
            f"skipped: {skipped}\n"
            f"{summary['seconds']['run']:.2f} s: {summary['docs_per_s']:,.0f} docs/s, "
            f"{summary['tokens_per_s']:,.0f} tokens/s with {summary['workers']} worker(s)"
            + (f" x {summary['ranks']} rank(s), {summary['shards']} shard(s)" if summary.get("shards") else ""))
