#!/usr/bin/env python3
"""Extract Python functions, methods and classes into JSONL records (paper Appendix A)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_t2c.cli import parse_config  # noqa: E402
from megatron_t2c.extract_corpus import ExtractConfig, extract_corpus, format_report  # noqa: E402

EPILOG = """examples:
  # the embedded default corpus: this interpreter's standard library
  tools/extract_functions.py --output runs/stdlib/functions.jsonl --report runs/stdlib/extract.json
  # your own trees and files, with every rejected file listed
  tools/extract_functions.py ~/src/project some/file.py --output out.jsonl --rejected-list rejected.tsv
  # a corpus far larger than memory: a list of trees, 2 ranks here (or mpiexec -n N / srun), resumable
  tools/extract_functions.py --files-from repos.txt --output out.jsonl --ranks 2 --workers 1 --resume
  mpiexec -n 8 tools/extract_functions.py 'corpus/*/src' --output out.jsonl --shard-dir /shared/x --resume
"""


def main(argv=None) -> int:
    config = parse_config(ExtractConfig, argv, description=__doc__, epilog=EPILOG)
    try:
        report = extract_corpus(config)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if report is not None:  # rank 0 (or the only rank) reports
        print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
