#!/usr/bin/env python3
"""Contamination check (paper §3.3): exact matches of HumanEval and MBPP prompts in the training data.

Same as ``t2c contamination``: a thin wrapper over
:func:`megatron_t2c.analysis.commands.contamination_main`; ``--help`` lists the flags.
"""

import sys

from megatron_t2c.analysis.commands import contamination_main as main

if __name__ == "__main__":  # guarded: checkpoint writers and worker pools start helper processes
    sys.exit(main())
