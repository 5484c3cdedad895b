#!/usr/bin/env python3
"""Summarise a pipeline run directory: corpus accounting, tokenizer, and datasets read back with megatron-core."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataclasses import dataclass  # noqa: E402

from megatron_t2c.cli import option, parse_config  # noqa: E402
from megatron_t2c.data_summary import write_summary  # noqa: E402


@dataclass(kw_only=True)
class SummaryConfig:
    """Where the run is."""

    run_dir: str = option(positional=True, help="the run directory (with data/ inside)")


def main(argv=None) -> int:
    config = parse_config(SummaryConfig, argv, description=__doc__,
                          epilog="example:\n  tools/data_summary.py runs/quickstart")
    _, text = write_summary(config.run_dir)
    print(text)
    print(f"(written to {os.path.join(config.run_dir, 'summary.md')} and summary.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
