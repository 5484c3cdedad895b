#!/usr/bin/env python3
"""Convert megatron_t2c checkpoints to Hugging Face directories and back.

Same as ``t2c convert``: a thin wrapper over
:func:`megatron_t2c.hf.commands.convert_main`; ``--help`` lists the flags.
"""

import sys

from megatron_t2c.hf.commands import convert_main as main

if __name__ == "__main__":  # guarded: checkpoint writers and worker pools start helper processes
    sys.exit(main())
