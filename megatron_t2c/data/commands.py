"""Command-line entry points of the data stages (t2c extract, preprocess, summary)."""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass

from megatron_t2c.data.corpus_extraction import ExtractConfig, extract_corpus, format_report
from megatron_t2c.data.preprocess import PreprocessConfig, preprocess
from megatron_t2c.data.preprocess.accounting import StrictError, format_summary
from megatron_t2c.data.summary import write_summary
from megatron_t2c.utils.dataclass_flags import option, parse_config


EXTRACT_DOC = """Extract Python functions, methods and classes into JSONL records (paper Appendix A)."""

EXTRACT_EPILOG = """examples:
  # the embedded default corpus: this interpreter's standard library
  tools/extract_functions.py --output runs/stdlib/functions.jsonl --report runs/stdlib/extract.json
  # your own trees and files, with every rejected file listed
  tools/extract_functions.py ~/src/project some/file.py --output out.jsonl --rejected-list rejected.tsv
  # a corpus far larger than memory: a list of trees, 2 ranks here (or mpiexec -n N / srun), resumable
  tools/extract_functions.py --files-from repos.txt --output out.jsonl --ranks 2 --workers 1 --resume
  mpiexec -n 8 tools/extract_functions.py 'corpus/*/src' --output out.jsonl --shard-dir /shared/x --resume
"""


def extract_main(argv=None) -> int:
    config = parse_config(ExtractConfig, argv, description=EXTRACT_DOC, epilog=EXTRACT_EPILOG)
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


PREPROCESS_DOC = """Convert JSONL extraction records to a Megatron indexed dataset (OUT.bin + OUT.idx).

A thin command line over :func:`megatron_t2c.data.preprocess.preprocess`; see that package for the details.
"""

PREPROCESS_DESCRIPTION = PREPROCESS_DOC.split("\n\n")[0] + """

One document per kept record, in input order, each the formatted sample ending with [eoc]; samples
longer than --max-seq-length tokens are dropped.  Every input line is accounted for in the summary
(lines == documents + sum of skipped by reason); bad lines are printed with their line numbers.
Outputs are written to temporary files and renamed into place only on success."""

PREPROCESS_EPILOG = """example:
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


def preprocess_main(argv: list[str] | None = None) -> int:
    config = parse_config(PreprocessConfig, argv, description=PREPROCESS_DESCRIPTION, epilog=PREPROCESS_EPILOG)
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


SUMMARY_DOC = """Summarise a pipeline run directory: corpus accounting, tokenizer, and datasets read back with megatron-core."""

@dataclass(kw_only=True)
class SummaryConfig:
    """Where the run is."""

    run_dir: str = option(positional=True, help="the run directory (with data/ inside)")


def summary_main(argv=None) -> int:
    config = parse_config(SummaryConfig, argv, description=SUMMARY_DOC,
                          epilog="example:\n  tools/data_summary.py runs/quickstart")
    _, text = write_summary(config.run_dir)
    print(text)
    print(f"(written to {os.path.join(config.run_dir, 'summary.md')} and summary.json)")
    return 0
