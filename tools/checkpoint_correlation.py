#!/usr/bin/env python
"""Pearson correlation of pass@1 across a series of checkpoints between test sets (paper Table 4).

A thin command line over :mod:`megatron_t2c.correlation`.  Inputs (any mix):

  --root DIR        DIR/<checkpoint>/<testset>.summary.json or DIR/<checkpoint>/<testset>/<mode>.summary.json
                    (summaries written by `tasks/evaluate.py execute --summary`)
  --summary CKPT:TESTSET=PATH ...   single summaries (several after one --summary)
  --table FILE.json {checkpoint: {testset: value}}

Test sets are named freely; the paper's are humaneval, mbpp_dev (MBPP task ids 511-600) and mbpp_test
(11-510), shown first and in that order.  Writes the matrix (with the number of shared checkpoints) and the
per-checkpoint values as JSON (--output) and markdown (--markdown, also printed).  A correlation is null when
a series is constant or fewer than two checkpoints share both test sets; the notes say which."""

import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_t2c.cli import option, parse_config  # noqa: E402

EPILOG = """examples:
  tools/checkpoint_correlation.py --root runs/series/eval --mode greedy --output corr.json --markdown corr.md
  tools/checkpoint_correlation.py \\
      --summary iter_1000:humaneval=eval/1000/he.json iter_1000:mbpp_test=eval/1000/mbpp.json \\
                iter_2000:humaneval=eval/2000/he.json iter_2000:mbpp_test=eval/2000/mbpp.json"""


@dataclasses.dataclass
class CorrelationConfig:
    """Checkpoint correlation between test sets."""

    root: str = option(None, "a directory of per-checkpoint summaries (see above)", metavar="DIR")
    summary: list[str] = option(default_factory=list,
                                help="summaries, CHECKPOINT:TESTSET=PATH ... (all after one --summary)",
                                metavar="CKPT:TESTSET=PATH")
    table: str = option(None, "a JSON table {checkpoint: {testset: value}}", metavar="FILE.json")
    mode: str = option("greedy", "with --root: the <mode>.summary.json read inside DIR/<ckpt>/<testset>/")
    metric: str = option("pass@1", "the summary key to correlate")
    testsets: list[str] = option(default_factory=list, help="test sets to include, in this order (default: all "
                                                            "found; humaneval, mbpp_dev, mbpp_test first)")
    output: str = option(None, "write the result as JSON", metavar="FILE.json")
    markdown: str = option(None, "write the markdown tables", metavar="FILE.md")


def main(argv=None) -> int:
    config = parse_config(CorrelationConfig, argv, description=__doc__, epilog=EPILOG,
                          prog="tools/checkpoint_correlation.py")
    from megatron_t2c import correlation as C
    from megatron_t2c.atomic import atomic_open, write_json

    tables = []
    if config.root:
        tables.append(C.collect_directory(config.root, mode=config.mode, metric=config.metric))
    if config.table:
        with open(config.table, encoding="utf-8") as fh:
            tables.append(json.load(fh))
    if config.summary:
        tables.append(C.parse_summary_specs(config.summary, config.metric))
    if not tables:
        raise SystemExit("error: give --root, --summary or --table")
    table = C.merge_tables(*tables)
    if not table:
        raise SystemExit("error: no values found")
    result = C.correlation_matrix(table, config.testsets or None)
    result["metric"] = config.metric
    text = C.format_markdown(result)
    print(text)
    if config.output:
        write_json(config.output, result)
    if config.markdown:
        with atomic_open(config.markdown) as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
