#!/usr/bin/env python3
"""Write RUN_DIR/report.md (and its PNGs beside it) for a pipeline run directory.

Same as ``t2c report``: a thin wrapper over
:func:`megatron_t2c.analysis.commands.report_main`; ``--help`` lists the flags.
"""

import sys

from megatron_t2c.analysis.commands import report_main as main

if __name__ == "__main__":  # guarded: checkpoint writers and worker pools start helper processes
    sys.exit(main())
