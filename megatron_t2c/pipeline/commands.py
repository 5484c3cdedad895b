"""Command-line entry point of the main job (t2c pipeline)."""

from __future__ import annotations


PIPELINE_DOC = """The main job after the data stages: MAPT -> MRPT variants -> HumanEval/MBPP -> HF export -> report.

Called by examples/quickstart.sh; see megatron_t2c/pipeline/main_job.py for the stages and the run directory.
"""

PIPELINE_EPILOG = """examples:
  python tools/run_pipeline.py runs/quickstart                      # the tiny defaults (CPU, ~15 min)
  python tools/run_pipeline.py runs/big --model pangu-350m --num-layers 0 --hidden-size 0 \\
      --num-attention-heads 0 --seq-length 0 --mapt-iters 20000 --nproc-per-node 8 --no-cpu
  A finished stage is skipped on a re-run; an interrupted one resumes."""


def pipeline_main(argv=None) -> int:
    from megatron_t2c.utils.dataclass_flags import parse_config
    from megatron_t2c.pipeline.main_job import Pipeline, PipelineConfig

    config = parse_config(PipelineConfig, argv, epilog=PIPELINE_EPILOG,
                          description=PIPELINE_DOC.split("\n")[0])
    Pipeline(config).run()
    return 0
