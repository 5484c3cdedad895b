#!/usr/bin/env python3
"""Pre-train a text-to-code GPT (MAPT) or continue it with modality-relative pre-training (MRPT).

Launch with torchrun on any number of nodes and GPUs, or as one CPU process with ``--cpu``; ``--help``
lists every flag (megatron_t2c.train_config) and examples.  The loop lives in megatron_t2c.training.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    from megatron_t2c.checkpointing import CheckpointError
    from megatron_t2c.train_config import parse_run_config
    from megatron_t2c.training import TrainingError, pretrain
    from megatron_t2c.training_data import DataError

    run = parse_run_config(argv)
    try:
        pretrain(run)
    except (CheckpointError, DataError, TrainingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # guarded: dist_checkpointing starts helper processes
    sys.exit(main())
