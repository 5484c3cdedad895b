#!/usr/bin/env python3
"""Zero-shot evaluation on HumanEval and MBPP: ``generate`` samples, then ``execute`` them in the sandbox.

Same as ``t2c evaluate``: a thin wrapper over :func:`megatron_t2c.evaluation.commands.evaluate_main`.
"""

import sys

from megatron_t2c.evaluation.commands import evaluate_main

if __name__ == "__main__":  # guarded: megatron's checkpoint loading may start helper processes
    sys.exit(evaluate_main(prog="tasks/evaluate.py"))
