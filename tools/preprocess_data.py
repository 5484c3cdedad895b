#!/usr/bin/env python3
"""Convert JSONL extraction records to a Megatron indexed dataset (OUT.bin + OUT.idx).

Same as ``t2c preprocess``: a thin wrapper over
:func:`megatron_t2c.data.commands.preprocess_main`; ``--help`` lists the flags.
"""

import sys

from megatron_t2c.data.commands import preprocess_main as main

if __name__ == "__main__":  # guarded: checkpoint writers and worker pools start helper processes
    sys.exit(main())
