#!/usr/bin/env python
"""Write RUN_DIR/report.md (and its PNGs beside it) for a pipeline run directory.

A thin command line over :mod:`megatron_t2c.report`: pipeline status; a results table shaped like the
paper's Table 2 (MAPT and the MRPT runs by objective x separation; HumanEval and MBPP pass@1/10/100 and
incremental pass@1, micro and macro); training curves from the TensorBoard logs (training_curves.png);
corpus and dataset statistics (summary.json); t-SNE plots of embedding neighbours (embeddings_<run>.png) for
the MAPT checkpoint and one separated MRPT checkpoint; the Hugging Face export check (hf/<run>/verify.json);
the contamination check (contamination.json, computed from data/functions.jsonl when absent); stage timings
(timings.json).  Missing parts are reported as "not run"; the report is written for partial runs too."""

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_t2c.cli import option, parse_config  # noqa: E402

EPILOG = """examples:
  tools/make_report.py runs/quickstart
  tools/make_report.py runs/quickstart --embedding-runs mapt mrpt_code_full --tokens open join def split \\
      --no-contamination"""


@dataclasses.dataclass
class ReportConfig:
    """The run to report on."""

    run_dir: str = option(positional=True, help="the pipeline run directory (data/, train/, eval/, hf/ ...)")
    output: str = option(None, "the report file (default: RUN_DIR/report.md; PNGs go to RUN_DIR)")
    embeddings: bool = option(True, "draw the embedding-neighbour t-SNE plots")
    embedding_runs: list[str] = option(default_factory=list, help="runs to draw (default: mapt and one MRPT run "
                                                                  "with separation full, else partial)")
    tokens: list[str] = option(default_factory=lambda: ["open", "join", "def", "split"],
                               help="query tokens of the embedding plots")
    neighbours: int = option(20, "neighbours per token and space")
    contamination: bool = option(True, "include the contamination check (computed when contamination.json is "
                                       "missing)")
    mbpp_path: str = option(None, "the official mbpp.jsonl for the contamination check")


def main(argv=None) -> int:
    config = parse_config(ReportConfig, argv, description=__doc__, epilog=EPILOG, prog="tools/make_report.py")
    from megatron_t2c.report import build_report

    result = build_report(config.run_dir, output=config.output, embeddings=config.embeddings,
                          embedding_runs=config.embedding_runs, tokens=config.tokens,
                          neighbours=config.neighbours, contamination=config.contamination,
                          mbpp_path=config.mbpp_path)
    for section, status in result["sections"].items():
        if status != "ok":
            print(f"warning: section {section!r}: {status}", file=sys.stderr)
    print(f"wrote {result['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
