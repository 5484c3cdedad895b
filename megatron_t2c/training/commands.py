"""Command-line entry point of training (t2c train, pretrain_t2c.py): MAPT from scratch or MRPT from a checkpoint."""

from __future__ import annotations

import sys


def train_main(argv: list[str] | None = None) -> int:
    """Parse the run configuration (``--help`` lists every flag) and train; one-line errors exit 2."""
    from megatron_t2c.data.gpt_datasets import DataError
    from megatron_t2c.training.checkpointing import CheckpointError
    from megatron_t2c.training.config import parse_run_config
    from megatron_t2c.training.loop import TrainingError, pretrain

    run = parse_run_config(argv)
    try:
        pretrain(run)
    except (CheckpointError, DataError, TrainingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
