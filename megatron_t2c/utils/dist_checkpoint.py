"""Reading torch distributed checkpoints in one process, on every torch release we support (no megatron)."""

from __future__ import annotations


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
