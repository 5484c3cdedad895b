"""Command-line entry point of tokenizer training (t2c tokenizer)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from megatron_t2c.mrpt.formats import FORMATS
from megatron_t2c.tokenizer.train import TrainerOptions, format_summary, train_tokenizer
from megatron_t2c.utils.atomic import write_json
from megatron_t2c.utils.dataclass_flags import option, parse_configs
from megatron_t2c.utils.records import LineReport


TOKENIZER_DOC = """Train the SentencePiece tokenizer (fixed special ids, exact round trip) on JSONL extraction records.

A thin command line over :func:`megatron_t2c.tokenizer.train.train_tokenizer`.
"""

TOKENIZER_DESCRIPTION = TOKENIZER_DOC.split("\n\n")[0] + """

Trains on the formatted sample of every valid record (docstring and normalised code) and writes
P.model and P.vocab.  Markers and "\\n \\t \\r" are user-defined pieces with fixed ids (see
megatron_t2c/mrpt/special_tokens.py); the same input and seed give the same model bytes."""

TOKENIZER_EPILOG = """example:
  tools/train_tokenizer.py --input functions.jsonl --output-prefix tokenizer --vocab-size 32000 \\
      --model-type bpe --format pangu --seed 1234"""


@dataclass(kw_only=True)
class TrainTokenizerJob:
    """Input and output."""

    input: str = option(help="JSONL file of extraction records", metavar="FILE.jsonl")
    output_prefix: str = option(help="write P.model and P.vocab", metavar="P")
    format: str = option("pangu", "sample format of the training text", choices=FORMATS)
    summary: str | None = option(None, "also write the summary as JSON", metavar="FILE.json")
    show_bad: int = option(10, "print at most this many bad lines in full")


def train_main(argv: list[str] | None = None) -> int:
    job, options = parse_configs(TrainTokenizerJob, TrainerOptions, argv=argv, description=TOKENIZER_DESCRIPTION,
                                 epilog=TOKENIZER_EPILOG)
    report = LineReport(max_shown=job.show_bad, label=job.input)
    try:
        summary = train_tokenizer(job.input, job.output_prefix, fmt=job.format, options=options, report=report)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_summary(summary.as_dict()))
    if job.summary:
        write_json(job.summary, summary.as_dict())
    return 0
