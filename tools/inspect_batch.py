#!/usr/bin/env python
"""Print what an MRPT objective and separation feed the model, one JSON object per packed sequence.

A thin command line over :func:`megatron_t2c.inspection.inspect`; see that module for the details.
"""

from __future__ import annotations

import os
import sys

from megatron_t2c.cli import parse_config
from megatron_t2c.inspection import InspectConfig, inspect

DESCRIPTION = __doc__.split("\n\n")[0] + """

Documents (records of --input, formatted and encoded as preprocessing does, or the documents of --dataset)
are packed as megatron-core's GPTDataset packs them: sequence i is stream[i*S : i*S+S+1], tokens = row[:-1],
labels = row[1:].  Per position: piece, token_id, modality (shared|docstring|code), row (embedding row: the
base id, or vocab_size + j for a code token that is the j-th separated id), position_id, loss, input_id
(after corruption), input_piece, label_id and attends ([start, end) key ranges)."""

EPILOG = """examples:
  tools/inspect_batch.py --tokenizer-model tokenizer.model --input functions.jsonl \\
      --format pangu --objective prefix-code --separation partial --seq-length 64 --max-sequences 2
  tools/inspect_batch.py --tokenizer-model tokenizer.model --dataset data/stdlib_pangu \\
      --objective corrupt-code --separation auto --k 128 --seed 7 --print-separation | head -1 | python -m json.tool"""


def main(argv: list[str] | None = None) -> int:
    config = parse_config(InspectConfig, argv, description=DESCRIPTION, epilog=EPILOG)
    try:
        inspect(config, sys.stdout, sys.stderr)
        sys.stdout.flush()
    except BrokenPipeError:  # piped into head: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
