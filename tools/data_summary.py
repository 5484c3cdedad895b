#!/usr/bin/env python3
"""Summarise a pipeline run directory: corpus accounting, tokenizer, and datasets read back with megatron-core.

Same as ``t2c summary``: a thin wrapper over
:func:`megatron_t2c.data.commands.summary_main`; ``--help`` lists the flags.
"""

import sys

from megatron_t2c.data.commands import summary_main as main

if __name__ == "__main__":  # guarded: checkpoint writers and worker pools start helper processes
    sys.exit(main())
