#!/usr/bin/env python3
"""The main job after the data stages: MAPT -> MRPT variants -> HumanEval/MBPP -> HF export -> report.

Same as ``t2c pipeline``: a thin wrapper over
:func:`megatron_t2c.pipeline.commands.pipeline_main`; ``--help`` lists the flags.
"""

import sys

from megatron_t2c.pipeline.commands import pipeline_main as main

if __name__ == "__main__":  # guarded: checkpoint writers and worker pools start helper processes
    sys.exit(main())
