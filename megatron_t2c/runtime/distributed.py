"""Process-group and model-parallel set-up and tear-down.

:func:`initialize_distributed` brings up ``torch.distributed`` (gloo on the CPU, NCCL on GPUs), megatron's
model-parallel groups and the random seeds, either under ``torchrun`` (from its environment variables) or
as a single process (world size 1 on a free port of 127.0.0.1). :func:`destroy_distributed` undoes all of it,
so one process -- a test session, say -- can initialise again with other sizes.
"""

from __future__ import annotations

import datetime
import gc
import os
import random
import socket

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel

from megatron_t2c.runtime import cpu_compat as compat

__all__ = ["initialize_distributed", "destroy_distributed", "free_port", "launched_by_torchrun",
           "load_in_this_process"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (which exports RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _init_process_group(cpu: bool, timeout: datetime.timedelta) -> None:
    """Initialise the default process group from torchrun's variables, or as a world of one."""
    backend = "gloo" if cpu else "nccl"
    if launched_by_torchrun():
        if not cpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
    else:
        if not cpu:
            torch.cuda.set_device(0)
        dist.init_process_group(backend=backend, init_method=f"tcp://127.0.0.1:{free_port()}",
                                rank=0, world_size=1, timeout=timeout)


def _seed_everything(seed: int) -> None:
    """Seed Python, NumPy, torch and megatron's RNG tracker.

    As in Megatron-LM, each pipeline stage adds ``100 * stage`` so that stages do not draw identical
    initial weights; megatron's tracker then derives the tensor-parallel and expert seeds.
    """
    seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)  # looked up now: compat may have wrapped it


def initialize_distributed(tensor_model_parallel_size: int = 1, pipeline_model_parallel_size: int = 1, *,
                           cpu: bool, seed: int,
                           virtual_pipeline_model_parallel_size: int | None = None,
                           timeout: datetime.timedelta = datetime.timedelta(minutes=10)) -> None:
    """Initialise torch.distributed, megatron's model-parallel state and the seeds.

    Args:
        tensor_model_parallel_size: ranks each layer is split across.
        pipeline_model_parallel_size: pipeline stages; the data-parallel size is what remains of the world.
        cpu: compute on the CPU with gloo (enables :mod:`megatron_t2c.runtime.cpu_compat`); else CUDA with NCCL.
        seed: base random seed (see :func:`_seed_everything`).
        virtual_pipeline_model_parallel_size: model chunks per stage for the interleaved schedule.
        timeout: how long a collective may wait before the process group gives up.
    """
    if cpu:
        compat.enable_cpu_compat()
    elif not torch.cuda.is_available():
        raise RuntimeError("no CUDA device: pass cpu=True (--cpu) to run on the CPU")
    if not dist.is_initialized():  # else reuse it (see destroy_distributed(keep_process_group=True))
        _init_process_group(cpu, timeout)
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tensor_model_parallel_size,
        pipeline_model_parallel_size=pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=virtual_pipeline_model_parallel_size,
        distributed_timeout_minutes=max(1, int(timeout.total_seconds() // 60)),
    )
    _seed_everything(seed)


def destroy_distributed(keep_process_group: bool = False) -> None:
    """Tear down megatron's model-parallel state and the default process group (safe to call twice).

    With ``keep_process_group=True`` only the model-parallel state goes, so that the same ranks can call
    :func:`initialize_distributed` again with other parallel sizes.
    """
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized() and not keep_process_group:
        dist.destroy_process_group()
    # Models, optimisers and megatron's group handles form reference cycles that hold the groups' sockets
    # and pipes: free them now, so that a process running many stages in turn does not run out of files.
    gc.collect()


def load_in_this_process(state_dict: dict, storage_reader) -> None:
    """``torch.distributed.checkpoint.load`` of ``state_dict`` by this process alone, whether or not a process
    group exists (no collective).  ``load`` takes ``no_dist`` from torch 2.7; torch 2.6 (the oldest release
    megatron-core 0.16.1 accepts) has it only on the loader that ``load`` calls for plain tensors."""
    import inspect

    from torch.distributed import checkpoint as dcp

    if "no_dist" in inspect.signature(dcp.load).parameters:
        dcp.load(state_dict, storage_reader=storage_reader, no_dist=True)
    else:
        from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

        _load_state_dict(state_dict, storage_reader, no_dist=True)
