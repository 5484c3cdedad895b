"""Training: run configuration, the loop, distributed checkpoints, metrics."""
