#!/usr/bin/env python
"""Convert JSONL extraction records to a Megatron indexed dataset (OUT.bin + OUT.idx).

A thin command line over :func:`megatron_t2c.preprocess.preprocess`; see that module for the details.
"""

from __future__ import annotations

import json
import signal
import sys

from megatron_t2c.cli import parse_config
from megatron_t2c.preprocess import PreprocessConfig, StrictError, format_summary, preprocess

DESCRIPTION = __doc__.split("\n\n")[0] + """

One document per kept record, in input order, each the formatted sample ending with [eoc]; samples
longer than --max-seq-length tokens are dropped.  Every input line is accounted for in the summary
(lines == documents + sum of skipped by reason); bad lines are printed with their line numbers.
Outputs are written to temporary files and renamed into place only on success."""

EPILOG = """example:
  tools/preprocess_data.py --input functions.jsonl --tokenizer-model tokenizer.model \\
      --output-prefix data/stdlib_pangu --format pangu --include text-code --workers 2 \\
      --summary data/stdlib_pangu.summary.json --index-map data/stdlib_pangu.lines
  # already-partitioned, compressed inputs, 2 local ranks, resumable after an interruption
  tools/preprocess_data.py --input 'records/*.jsonl.gz' --tokenizer-model tokenizer.model \\
      --output-prefix data/big --ranks 2 --workers 1 --resume
  # across nodes (the shard directory must be on a filesystem all ranks see)
  mpiexec -n 16 tools/preprocess_data.py --input records/ ... --shard-dir /shared/big.shards --resume"""


def _terminate(signum, frame):  # SIGTERM unwinds like Ctrl-C, so temporary outputs are removed
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    config = parse_config(PreprocessConfig, argv, description=DESCRIPTION, epilog=EPILOG)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        summary = preprocess(config)
    except StrictError as exc:
        print(f"error: {exc}; nothing written", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing written", file=sys.stderr)
        return 130
    except SystemExit:
        print("terminated; nothing written", file=sys.stderr)
        raise
    if summary is None:  # a rank other than 0: rank 0 merges and reports
        return 0
    print(format_summary(summary))
    if not config.summary:
        print(json.dumps({k: summary[k] for k in ("lines", "documents", "tokens", "skipped")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
