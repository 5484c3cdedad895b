#!/usr/bin/env python3
"""Nearest neighbours of tokens in a checkpoint's docstring and code embedding spaces, drawn with t-SNE.

Same as ``t2c embeddings``: a thin wrapper over
:func:`megatron_t2c.analysis.commands.embeddings_main`; ``--help`` lists the flags.
"""

import sys

from megatron_t2c.analysis.commands import embeddings_main as main

if __name__ == "__main__":  # guarded: checkpoint writers and worker pools start helper processes
    sys.exit(main())
