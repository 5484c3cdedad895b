#!/usr/bin/env python3
"""Pearson correlation of pass@1 across a series of checkpoints between test sets (paper Table 4).

Same as ``t2c correlation``: a thin wrapper over
:func:`megatron_t2c.analysis.commands.correlation_main`; ``--help`` lists the flags.
"""

import sys

from megatron_t2c.analysis.commands import correlation_main as main

if __name__ == "__main__":  # guarded: checkpoint writers and worker pools start helper processes
    sys.exit(main())
