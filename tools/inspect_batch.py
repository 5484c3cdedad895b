#!/usr/bin/env python3
"""Print what an MRPT objective and separation feed the model, one JSON object per packed sequence.

Same as ``t2c inspect``: a thin wrapper over
:func:`megatron_t2c.analysis.commands.inspect_main`; ``--help`` lists the flags.
"""

import sys

from megatron_t2c.analysis.commands import inspect_main as main

if __name__ == "__main__":  # guarded: checkpoint writers and worker pools start helper processes
    sys.exit(main())
