"""The CUDA tier (``pytest -m gpu``): every test here is marked ``gpu`` and skipped where CUDA is absent.

``cuda_dist``: a world of one NCCL rank on ``cuda:0`` with megatron's model-parallel state (TP = PP = 1) and
seeded RNGs (megatron's CUDA RNG tracker included), torn down after the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
NO_CUDA = pytest.mark.skip(reason="the CUDA tier needs a CUDA device (run benchmarks/device_check.sh on a GPU)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.gpu)
            if not torch.cuda.is_available():
                item.add_marker(NO_CUDA)


@pytest.fixture
def cuda_dist():
    from megatron_t2c.runtime import distributed as parallel

    parallel.initialize_distributed(1, 1, cpu=False, seed=1234)
    try:
        yield torch.device("cuda", torch.cuda.current_device())
    finally:
        parallel.destroy_distributed()
