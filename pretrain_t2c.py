#!/usr/bin/env python3
"""Pre-train a text-to-code GPT (MAPT) or continue it with modality-relative pre-training (MRPT).

Launch with torchrun on any number of nodes and GPUs, or as one CPU process with ``--cpu``; ``--help``
lists every flag (megatron_t2c.training.config).  Same as ``t2c train``: a thin wrapper over
:func:`megatron_t2c.training.commands.train_main`.
"""

import sys

from megatron_t2c.training.commands import train_main as main

if __name__ == "__main__":  # guarded: dist_checkpointing starts helper processes
    sys.exit(main())
