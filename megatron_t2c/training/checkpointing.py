"""Distributed checkpoints: layout, atomic save, keep-K, resume, MAPT -> MRPT initialisation, inference loads.

A run directory (``--save``) holds one directory per saved iteration and a pointer to the newest complete one::

    SAVE/
      latest_checkpointed_iteration.txt   # "1200": moved only after iter_0001200/ is complete
      iter_0001200/
        metadata.json, common.pt, *.distcp  # megatron dist_checkpointing (any TP/PP can read it back)
        t2c_run.json                       # the run: model config, separated ids, tokenizer fingerprint, ...
        tokenizer.model                    # the SentencePiece model the run was trained with, or
        tokenizer/                         # a Hugging Face tokenizer, as its canonical directory
                                           # (megatron_t2c.tokenizer.huggingface.HFTokenizerCore.save)

The megatron state dict is ``{"model": ..., "optimizer": ..., "scheduler": ..., "progress": ..., "rng":
...}``; the model part is :meth:`~megatron_t2c.models.gpt.T2CGPTModel.sharded_state_dict` (TP/PP-agnostic; a
run without separation has exactly a stock megatron GPT's keys).  Only ``model`` is needed to evaluate or
convert a checkpoint.

**Atomicity.** Every rank writes into ``SAVE/.iter_0001200.partial``; after a barrier rank 0 adds
``t2c_run.json`` and the tokenizer, renames the directory to ``iter_0001200`` and only then rewrites the
pointer (atomically).  A crash at any moment leaves the previous checkpoint and pointer untouched; a stale
``.partial`` directory is removed by the next save.  Old iterations beyond ``keep`` are deleted after the
pointer has moved.

**Checks on load** (:func:`check_compatible`): a checkpoint whose tokenizer (its fingerprint:
:func:`megatron_t2c.tokenizer.loading.tokenizer_fingerprint`),
architecture or separated ids differ from the run's is refused with a message naming the difference; a
damaged or incomplete checkpoint raises :class:`CheckpointError` naming the directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
from typing import Any, Iterable, Optional, Sequence

import torch
import torch.distributed as dist

from megatron_t2c.utils.atomic import atomic_open, write_json

__all__ = ["CheckpointError", "LATEST_FILE", "RUN_INFO_FILE", "TOKENIZER_FILE", "TOKENIZER_DIR", "iteration_dir",
           "latest_iteration", "resolve", "read_run_info", "file_sha256", "check_compatible", "tokenizer_record",
           "stored_tokenizer", "tokenizer_path",
           "save_checkpoint", "load_checkpoint", "load_model_weights", "model_from_checkpoint", "list_iterations"]

log = logging.getLogger(__name__)

LATEST_FILE = "latest_checkpointed_iteration.txt"
RUN_INFO_FILE = "t2c_run.json"
TOKENIZER_FILE = "tokenizer.model"
#: Where a Hugging Face tokenizer is stored (its canonical directory).
TOKENIZER_DIR = "tokenizer"
RUN_INFO_VERSION = 1
_ITER_DIR = re.compile(r"^iter_(\d{7,})$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged, or does not match the run that loads it."""


# ---------------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------------

def iteration_dir(save: str, iteration: int) -> str:
    """``SAVE/iter_0001200``."""
    return os.path.join(save, f"iter_{iteration:07d}")


def _partial_dir(save: str, iteration: int) -> str:
    return os.path.join(save, f".iter_{iteration:07d}.partial")


def list_iterations(save: str) -> list[int]:
    """Complete iteration directories under ``save``, ascending."""
    if not os.path.isdir(save):
        return []
    found = [int(m.group(1)) for name in os.listdir(save) if (m := _ITER_DIR.match(name))]
    return sorted(found)


def latest_iteration(save: str) -> Optional[int]:
    """The iteration the pointer file names, or None when ``save`` holds no checkpoint yet."""
    pointer = os.path.join(save, LATEST_FILE)
    if not os.path.exists(pointer):
        return None
    text = open(pointer, encoding="utf-8").read().strip()
    if not text.isdigit():
        raise CheckpointError(f"{pointer} is damaged: expected an iteration number, found {text[:40]!r}")
    return int(text)


def _is_checkpoint(path: str) -> bool:
    return os.path.exists(os.path.join(path, "metadata.json"))


def has_checkpoint(path: str) -> bool:
    """Whether ``path`` is an iteration directory or a run directory with something saved in it."""
    return os.path.isdir(path) and (_is_checkpoint(path) or os.path.exists(os.path.join(path, LATEST_FILE))
                                    or bool(list_iterations(path)))


def resolve(path: str) -> str:
    """The checkpoint directory meant by ``path``: a run directory (its latest iteration) or an iteration
    directory itself.  Raises :class:`CheckpointError` when there is none."""
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}: the path does not exist")
    if os.path.isdir(path) and _is_checkpoint(path):
        return path
    iteration = latest_iteration(path)
    if iteration is None and list_iterations(path):  # stopped between a rename and the pointer's update
        iteration = list_iterations(path)[-1]
    if iteration is None:
        raise CheckpointError(f"no checkpoint at {path}: neither an iteration directory (metadata.json) nor a "
                              f"run directory ({LATEST_FILE})")
    ckpt = iteration_dir(path, iteration)
    if not _is_checkpoint(ckpt):
        raise CheckpointError(f"{path}/{LATEST_FILE} names iteration {iteration} but {ckpt} is missing or "
                              "incomplete")
    return ckpt


def read_run_info(path: str) -> dict:
    """``t2c_run.json`` of the checkpoint at ``path`` (see :func:`resolve`)."""
    ckpt = resolve(path)
    info_path = os.path.join(ckpt, RUN_INFO_FILE)
    try:
        with open(info_path, encoding="utf-8") as fh:
            info = json.load(fh)
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt} has no {RUN_INFO_FILE}: not a megatron_t2c checkpoint, or damaged") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{info_path} is damaged: {exc}") from None
    if info.get("version") != RUN_INFO_VERSION:
        raise CheckpointError(f"{info_path}: unsupported run-info version {info.get('version')!r}")
    return info


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file (the tokenizer fingerprint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_compatible(info: dict, *, model: dict, vocab_size: int, tokenizer_sha256: Optional[str],
                     separated: Optional[Sequence[int]], where: str) -> None:
    """Raise :class:`CheckpointError` when the checkpoint ``info`` cannot be loaded into this run.

    ``model`` is the run's resolved architecture (``ModelConfig.architecture_dict()``); ``separated`` the run's
    separated ids, or None to skip that check (loading base rows only)."""
    problems = []
    if tokenizer_sha256 is not None and info["tokenizer"]["sha256"] != tokenizer_sha256:
        problems.append("the tokenizer differs (fingerprint "
                        f"{info['tokenizer']['sha256'][:12]}... in the checkpoint, {tokenizer_sha256[:12]}... here)")
    if info["vocab_size"] != vocab_size:
        problems.append(f"vocabulary size {info['vocab_size']} in the checkpoint, {vocab_size} here")
    from megatron_t2c.models.config import ARCHITECTURE_DEFAULTS, ARCHITECTURE_FIELDS

    for name in ARCHITECTURE_FIELDS:  # a field an older run info lacks is that time's layer (its default)
        theirs = info["architecture"].get(name, ARCHITECTURE_DEFAULTS.get(name))
        ours = model.get(name, ARCHITECTURE_DEFAULTS.get(name))
        if name == "seq_length" and model.get("position_embedding_type") == "rope":
            continue  # RoPE has no learned position table: any context length loads
        if theirs != ours:
            problems.append(f"{name} is {theirs} in the checkpoint, {ours} here")
    if separated is not None and list(info["separated_ids"]) != list(separated):
        problems.append(f"the checkpoint separates {len(info['separated_ids'])} tokens "
                        f"({info['separation']}), this run {len(separated)}")
    if problems:
        raise CheckpointError(f"cannot load {where}: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------------------
# Save
# ---------------------------------------------------------------------------------------------------

def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rng_state() -> dict:
    """This rank's random states: Python, NumPy, torch (CPU and CUDA) and megatron's tracker."""
    import random

    import numpy as np
    from megatron.core import tensor_parallel

    return {"random": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
            "tracker": tensor_parallel.get_cuda_rng_tracker().get_states()}


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    import random

    import numpy as np
    from megatron.core import tensor_parallel

    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def _rng_sharded_object(state: Optional[dict]):
    """The per-rank RNG state as one ShardedObject indexed by (pp, tp, dp) rank."""
    from megatron.core import parallel_state
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    pp, tp = parallel_state.get_pipeline_model_parallel_rank(), parallel_state.get_tensor_model_parallel_rank()
    dp = parallel_state.get_data_parallel_rank(with_context_parallel=True)
    shape = (parallel_state.get_pipeline_model_parallel_world_size(),
             parallel_state.get_tensor_model_parallel_world_size(),
             parallel_state.get_data_parallel_world_size(with_context_parallel=True))
    return ShardedObject("rng_state", state, shape, (pp, tp, dp), replica_id=0)


def parallel_layout() -> dict:
    """This run's parallel sizes (stored with a checkpoint: RNG states restore only under the same layout)."""
    from megatron.core import parallel_state

    return {"tensor_model_parallel_size": parallel_state.get_tensor_model_parallel_world_size(),
            "pipeline_model_parallel_size": parallel_state.get_pipeline_model_parallel_world_size(),
            "data_parallel_size": parallel_state.get_data_parallel_world_size(with_context_parallel=True)}


def _model_sharded_state(model_chunks: Sequence[torch.nn.Module], metadata: Optional[dict] = None) -> dict:
    if len(model_chunks) == 1:
        return _unwrap(model_chunks[0]).sharded_state_dict(metadata=metadata)
    return {f"chunk{i}": _unwrap(m).sharded_state_dict(metadata=metadata) for i, m in enumerate(model_chunks)}


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The T2CGPTModel inside megatron's DDP / Float16Module wrappers."""
    while hasattr(module, "module") and not hasattr(module, "layout"):
        module = module.module
    return module


def _optimizer_metadata() -> dict:
    return {"distrib_optim_sharding_type": "fully_reshardable"}


def _sharded_state(model_chunks, optimizer, scheduler, progress: dict, *, is_loading: bool,
                   with_rng: bool, base_rows_only: bool = False) -> dict:
    from megatron_t2c.models.gpt import BASE_ROWS_ONLY

    metadata = {BASE_ROWS_ONLY: True} if base_rows_only else None
    state: dict[str, Any] = {"model": _model_sharded_state(model_chunks, metadata)}
    if optimizer is not None:
        state["optimizer"] = optimizer.sharded_state_dict(state["model"], is_loading=is_loading,
                                                          metadata=_optimizer_metadata())
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if progress is not None:
        state["progress"] = dict(progress)
    if with_rng:
        state["rng"] = _rng_sharded_object(None if is_loading else rng_state())
    return state


def save_checkpoint(save: str, iteration: int, model_chunks: Sequence[torch.nn.Module], optimizer, scheduler,
                    *, progress: dict, run_info: dict, tokenizer_model, keep: Optional[int] = None
                    ) -> str:
    """Save a complete checkpoint of ``iteration`` atomically (see the module docstring); returns its path.

    Args:
        progress: plain values to restore on resume (iteration, consumed samples, ...).
        run_info: ``t2c_run.json`` content (see :func:`make_run_info`).
        tokenizer_model: the tokenizer to store beside the weights: a SentencePiece model file (copied to
            ``tokenizer.model``) or a Hugging Face tokenizer directory (saved as the canonical ``tokenizer/``),
            or such a tokenizer loaded (``T2CTokenizerCore``/``HFTokenizerCore``).
        keep: keep only the newest ``keep`` iterations (None: keep all).
    """
    from megatron.core import dist_checkpointing

    partial, final = _partial_dir(save, iteration), iteration_dir(save, iteration)
    if _rank() == 0:
        os.makedirs(save, exist_ok=True)
        if os.path.exists(partial):
            shutil.rmtree(partial)
        os.makedirs(partial)
    _barrier()
    state = _sharded_state(model_chunks, optimizer, scheduler, progress, is_loading=False, with_rng=True)
    dist_checkpointing.save(state, partial)
    _barrier()
    if _rank() == 0:
        write_json(os.path.join(partial, RUN_INFO_FILE), dict(run_info, iteration=iteration))
        if tokenizer_model:
            _store_tokenizer(tokenizer_model, partial)
        _fsync_dir(partial)
        if os.path.exists(final):  # re-saving an iteration (a resumed run): swap, never a half state
            old = final + ".old"
            if os.path.exists(old):
                shutil.rmtree(old)
            os.rename(final, old)
            os.rename(partial, final)
            shutil.rmtree(old)
        else:
            os.rename(partial, final)
        _fsync_dir(save)
        with atomic_open(os.path.join(save, LATEST_FILE)) as fh:
            fh.write(f"{iteration}\n")
        if keep is not None and keep > 0:
            for old_iteration in list_iterations(save)[:-keep]:
                if old_iteration != iteration:
                    shutil.rmtree(iteration_dir(save, old_iteration), ignore_errors=True)
    _barrier()
    return final


def _store_tokenizer(tokenizer_model, directory: str) -> None:
    """Copy a SentencePiece file to ``directory/tokenizer.model``, or save a Hugging Face tokenizer as the
    canonical ``directory/tokenizer/``; ``tokenizer_model`` is a path or a loaded tokenizer (its bytes are
    then written: the file it came from may be gone, e.g. an older iteration deleted by ``keep``)."""
    from megatron_t2c.tokenizer.huggingface import HFTokenizerCore

    if isinstance(tokenizer_model, HFTokenizerCore):
        tokenizer_model.save(os.path.join(directory, TOKENIZER_DIR))
        return
    if hasattr(tokenizer_model, "model_bytes"):
        with atomic_open(os.path.join(directory, TOKENIZER_FILE), "wb") as dst:
            dst.write(tokenizer_model.model_bytes)
        return
    if os.path.isdir(tokenizer_model):
        HFTokenizerCore(tokenizer_model).save(os.path.join(directory, TOKENIZER_DIR))
        return
    with open(tokenizer_model, "rb") as src, atomic_open(os.path.join(directory, TOKENIZER_FILE), "wb") as dst:
        shutil.copyfileobj(src, dst)


def tokenizer_record(tokenizer_model: Optional[str]) -> dict:
    """The run info's ``tokenizer`` entry: fingerprint, where the checkpoint stores it, its kind."""
    if not tokenizer_model:
        return {"sha256": None, "file": None, "kind": None}
    from megatron_t2c.tokenizer.loading import tokenizer_fingerprint, tokenizer_kind

    kind = tokenizer_kind(tokenizer_model)
    return {"sha256": tokenizer_fingerprint(tokenizer_model),
            "file": TOKENIZER_DIR if kind == "huggingface" else TOKENIZER_FILE, "kind": kind}


def make_run_info(*, model_config, vocab_size: int, separation: str, separated: Sequence[int],
                  tokenizer_model: Optional[str], fmt: str, objective: str, stage: str,
                  config: Optional[dict] = None) -> dict:
    """The ``t2c_run.json`` content for a run (the iteration is added at save time)."""
    return {
        "version": RUN_INFO_VERSION,
        "model_config": dataclasses.asdict(model_config),
        "architecture": model_config.architecture_dict(),
        "vocab_size": vocab_size,
        "separation": separation,
        "separated_ids": [int(i) for i in separated],
        "tokenizer": tokenizer_record(tokenizer_model),
        "format": fmt,
        "objective": objective,
        "stage": stage,
        "parallel": parallel_layout(),
        "config": config or {},
    }


# ---------------------------------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------------------------------

def _load(state: dict, ckpt: str) -> dict:
    from megatron.core import dist_checkpointing

    try:
        return dist_checkpointing.load(state, ckpt)
    except (CheckpointError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 -- torch's CheckpointException derives from BaseException
        raise CheckpointError(f"checkpoint {ckpt} is damaged or incomplete: {type(exc).__name__}: {exc}") from exc


def _load_model_chunks(model_chunks, loaded_model: dict, strict: bool = True) -> None:
    if len(model_chunks) == 1:
        _unwrap(model_chunks[0]).load_state_dict(loaded_model, strict=strict)
    else:
        for i, m in enumerate(model_chunks):
            _unwrap(m).load_state_dict(loaded_model[f"chunk{i}"], strict=strict)


def _skip_missing_states_on_reshardable_load() -> None:
    """Fix a megatron-core 0.16.1 bug hit without Apex/TE: loading a ``fully_reshardable`` distributed
    optimizer state copies every key of torch Adam's per-parameter state, ``step`` included, from a source
    that deliberately leaves ``step`` out (megatron restores it from the param groups) -> ``KeyError``.
    The wrapper copies only the keys the source has.  Idempotent."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    original = DistributedOptimizer._set_main_param_and_optimizer_states
    if getattr(original, "_t2c_fixed", False):
        return

    def set_states(self, model_param, tensors):
        if "step" not in tensors and not self.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8:
            group_index, group_order = self.model_param_group_index_map[model_param]
            main_param = self.optimizer.param_groups[group_index]["params"][group_order]
            state = self.optimizer.state[main_param]
            dst = {"param": main_param, **state}
            for key, value in tensors.items():
                dst[key].copy_(value)
            return None
        return original(self, model_param, tensors)

    set_states._t2c_fixed = True
    DistributedOptimizer._set_main_param_and_optimizer_states = set_states


def _init_optimizer_state(optimizer) -> None:
    """Give every parameter of a fresh Adam its (zero) state so that megatron can map a checkpoint's
    optimizer state onto it (without Apex/TE, megatron reads ``step`` from the state; its own dummy-step
    initialisation would move weight-decayed parameters)."""
    for chained in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(chained, "optimizer", None)
        if inner is None:
            continue
        for group in inner.param_groups:
            for param in group["params"]:
                state = inner.state[param]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(param.data)
                    state["exp_avg_sq"] = torch.zeros_like(param.data)


def load_checkpoint(path: str, model_chunks: Sequence[torch.nn.Module], optimizer, scheduler, *,
                    load_optim: bool = True, load_rng: bool = True) -> dict:
    """Resume: restore model, optimizer, scheduler (and the RNG states when the parallel layout is the same)
    from the checkpoint at ``path``; returns its ``progress`` dict.

    ``load_optim=False`` (megatron's ``--no-load-optim``) leaves the optimizer's state fresh; the schedule is
    then advanced to the checkpoint's step, so the learning rate continues where it was.  ``load_rng=False``
    (``--no-load-rng``) keeps the generators as seeded."""
    ckpt = resolve(path)
    info = read_run_info(ckpt)
    same_layout = info.get("parallel") == parallel_layout()
    fresh_scheduler = scheduler if not load_optim else None
    if not load_optim:
        optimizer = scheduler = None
    if not same_layout and load_rng:
        log.warning("checkpoint %s was saved with %s, this run is %s: random states start afresh", ckpt,
                    info.get("parallel"), parallel_layout())
    if optimizer is not None:
        _skip_missing_states_on_reshardable_load()
        _init_optimizer_state(optimizer)
    state = _sharded_state(model_chunks, optimizer, scheduler, {}, is_loading=True,
                           with_rng=same_layout and load_rng)
    loaded = _load(state, ckpt)
    _load_model_chunks(model_chunks, loaded["model"])
    if optimizer is not None:
        optimizer.load_state_dict(loaded["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(loaded["scheduler"])
    if same_layout and load_rng and loaded.get("rng") is not None:
        set_rng_state(loaded["rng"])
    progress = dict(loaded.get("progress", {}))
    if fresh_scheduler is not None and progress.get("iteration"):
        fresh_scheduler.step(increment=int(progress["iteration"]))
    return progress


def load_model_weights(path: str, model_chunks: Sequence[torch.nn.Module], *, base_rows_only: bool = False) -> dict:
    """Load only the weights of the checkpoint at ``path`` into ``model_chunks`` (any TP/PP); returns its
    run info.  ``base_rows_only``: read the base rows and initialise every code row from its token's row
    (MRPT from a MAPT checkpoint)."""
    from megatron_t2c.models.gpt import BASE_ROWS_ONLY

    ckpt = resolve(path)
    info = read_run_info(ckpt)
    if base_rows_only and info["separated_ids"]:
        raise CheckpointError(f"{ckpt} already has separation {info['separation']!r} "
                              f"({len(info['separated_ids'])} code rows): --init-from needs a checkpoint "
                              "without separation (MAPT); to continue this run use --load")
    metadata = {BASE_ROWS_ONLY: True} if base_rows_only else None
    loaded = _load({"model": _model_sharded_state(model_chunks, metadata)}, ckpt)
    _load_model_chunks(model_chunks, loaded["model"])
    return info


def model_from_checkpoint(path: str, *, transformer_overrides: Optional[dict] = None,
                          model_overrides: Optional[dict] = None):
    """Build this rank's model for the checkpoint at ``path`` (under the current parallel state) and load
    its weights.  For generation and conversion: dropout off unless ``model_overrides`` says otherwise.

    Returns ``(model, info)`` with ``model`` in eval mode and ``info`` the checkpoint's run info.
    """
    from megatron_t2c.models.config import ModelConfig
    from megatron_t2c.models.gpt import build_model, make_layout

    info = read_run_info(path)
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    values = {k: v for k, v in info["model_config"].items() if k in fields}
    values.update(hidden_dropout=0.0, attention_dropout=0.0)
    # the recorded architecture wins over the preset's current one (an older run info lacks the layer fields:
    # they are that time's, ARCHITECTURE_DEFAULTS, even when its preset has other layers today)
    config = ModelConfig.from_architecture(info["architecture"], **values) if "architecture" in info \
        else ModelConfig(**values)
    if model_overrides:
        config = dataclasses.replace(config, **model_overrides)
    layout = make_layout(config, info["separated_ids"], info["vocab_size"])
    model = build_model(config, layout, transformer_config=config.transformer_config(**(transformer_overrides or {})))
    load_model_weights(path, [model])
    model.eval()
    return model, info


def stored_tokenizer(path: str) -> Optional[str]:
    """The tokenizer stored with the checkpoint at ``path`` (``tokenizer.model`` or the Hugging Face
    directory ``tokenizer/``), or None."""
    ckpt = resolve(path)
    for name in (TOKENIZER_DIR, TOKENIZER_FILE):
        stored = os.path.join(ckpt, name)
        if name == TOKENIZER_DIR and os.path.isdir(stored) or name == TOKENIZER_FILE and os.path.isfile(stored):
            return stored
    return None


def tokenizer_path(path: str) -> str:
    """The tokenizer stored with the checkpoint at ``path`` (see :func:`stored_tokenizer`)."""
    stored = stored_tokenizer(path)
    if stored is None:
        raise CheckpointError(f"{resolve(path)} holds no {TOKENIZER_FILE} nor {TOKENIZER_DIR}/: pass the tokenizer "
                              "explicitly")
    return stored


def iter_checkpoints(paths: Iterable[str]) -> Iterable[str]:
    """Resolve several checkpoint paths (run directories expand to every complete iteration)."""
    for path in paths:
        if os.path.isdir(path) and not _is_checkpoint(path) and list_iterations(path):
            for iteration in list_iterations(path):
                yield iteration_dir(path, iteration)
        else:
            yield resolve(path)
