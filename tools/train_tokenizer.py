#!/usr/bin/env python3
"""Train the SentencePiece tokenizer (fixed special ids, exact round trip) on JSONL extraction records.

Same as ``t2c tokenizer``: a thin wrapper over
:func:`megatron_t2c.tokenizer.commands.train_main`; ``--help`` lists the flags.
"""

import sys

from megatron_t2c.tokenizer.commands import train_main as main

if __name__ == "__main__":  # guarded: checkpoint writers and worker pools start helper processes
    sys.exit(main())
