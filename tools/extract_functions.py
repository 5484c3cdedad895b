#!/usr/bin/env python3
"""Extract Python functions, methods and classes into JSONL records (paper Appendix A).

Same as ``t2c extract``: a thin wrapper over
:func:`megatron_t2c.data.commands.extract_main`; ``--help`` lists the flags.
"""

import sys

from megatron_t2c.data.commands import extract_main as main

if __name__ == "__main__":  # guarded: checkpoint writers and worker pools start helper processes
    sys.exit(main())
