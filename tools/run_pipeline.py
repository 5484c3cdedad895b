#!/usr/bin/env python3
"""The main job after the data stages: MAPT -> MRPT variants -> HumanEval/MBPP -> HF export -> report.

Called by examples/quickstart.sh; see megatron_t2c/quickstart.py for the stages and the run directory.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EPILOG = """examples:
  python tools/run_pipeline.py runs/quickstart                      # the tiny defaults (CPU, ~15 min)
  python tools/run_pipeline.py runs/big --model pangu-350m --num-layers 0 --hidden-size 0 \\
      --num-attention-heads 0 --seq-length 0 --mapt-iters 20000 --nproc-per-node 8 --no-cpu
  A finished stage is skipped on a re-run; an interrupted one resumes."""


def main(argv=None) -> int:
    from megatron_t2c.cli import parse_config
    from megatron_t2c.quickstart import Pipeline, PipelineConfig

    config = parse_config(PipelineConfig, argv, epilog=EPILOG, prog="tools/run_pipeline.py",
                          description=__doc__.split("\n")[0])
    Pipeline(config).run()
    return 0


if __name__ == "__main__":  # guarded: checkpoint writers start helper processes
    sys.exit(main())
