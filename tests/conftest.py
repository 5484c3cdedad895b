"""Shared pytest fixtures.

``dist``: a single-process gloo world with megatron's model-parallel state (TP = PP = 1) and seeded RNGs,
torn down after the test. Multi-rank tests use :func:`torchrun.run_with_torchrun` instead.
"""

from __future__ import annotations

import pytest

DIST_SEED = 1234


@pytest.fixture
def dist():
    """Initialise one CPU rank (gloo, TP=1, PP=1, seed ``DIST_SEED``); yields, then tears everything down."""
    from megatron_t2c.runtime import distributed as parallel  # imported here: most test modules never need megatron

    parallel.initialize_distributed(1, 1, cpu=True, seed=DIST_SEED)
    try:
        yield
    finally:
        parallel.destroy_distributed()
