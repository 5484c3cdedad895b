"""CPU compatibility layer for megatron-core 0.16.1.

megatron-core is written for CUDA: it draws dropout randomness from CUDA generators, allocates buffers
with ``device="cuda"`` or ``torch.cuda.current_device()``, calls ``torch.cuda.synchronize()`` and checks
``tensor.type() == "torch.cuda.FloatTensor"``. On a CPU-only machine (gloo backend) each of those raises.
:func:`enable_cpu_compat` makes the parts of megatron-core this project uses run on the CPU. Call it once,
at start-up, before building models; nothing else in the code base special-cases the CPU::

    from megatron_t2c.runtime import cpu_compat as compat
    if args.cpu or not torch.cuda.is_available():
        compat.enable_cpu_compat()

Two mechanisms, both applied only to named upstream functions (the table is :data:`PATCHES`):

1. **RNG.** The model-parallel RNG tracker is replaced by :class:`CpuRNGStatesTracker`, which keeps
   its named states (data-parallel, model-parallel, expert) as states of the CPU generator, so
   ``model_parallel_cuda_manual_seed`` and ``get_cuda_rng_tracker().fork()`` work unchanged. The
   activation-recompute helpers that snapshot "the CUDA RNG" snapshot the CPU generator instead.
2. **"CUDA means CPU" scopes.** Upstream functions that allocate on CUDA are wrapped so that they run
   inside :func:`cuda_means_cpu` (its docstring says what changes inside one).

Config: on a CPU run every ``ModelParallelConfig`` gets ``use_cpu_initialization=True`` and
``batch_p2p_comm=False`` (:func:`_cpu_config_defaults` says why).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import threading
from typing import Any, Callable, Iterator

import torch
from megatron.core.tensor_parallel import random as _random
from torch.overrides import TorchFunctionMode

__all__ = ["enable_cpu_compat", "is_enabled", "is_cpu_run", "device", "cuda_means_cpu",
           "CpuRNGStatesTracker", "PATCHES"]

_enabled = False
_lock = threading.Lock()
_scope = threading.local()  # .depth: how many cuda_means_cpu scopes this thread is inside
_WRAPPED = "__megatron_t2c_cpu_compat__"  # marks our wrappers so patching stays idempotent


# ---------------------------------------------------------------------------------------------------
# Public helpers
# ---------------------------------------------------------------------------------------------------

def is_enabled() -> bool:
    """True once :func:`enable_cpu_compat` has run in this process."""
    return _enabled


def is_cpu_run() -> bool:
    """True when this process computes on the CPU: compat enabled, or no CUDA device at all."""
    return _enabled or not torch.cuda.is_available()


def device() -> torch.device:
    """The device model tensors and batches belong on: the CPU on a CPU run, else the current GPU."""
    if is_cpu_run():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


# ---------------------------------------------------------------------------------------------------
# "CUDA means CPU" scopes
# ---------------------------------------------------------------------------------------------------

def _in_scope() -> bool:
    return getattr(_scope, "depth", 0) > 0


def _is_cuda_device(value: Any) -> bool:
    """Whether a ``device=`` argument names a CUDA device (an int is a CUDA ordinal)."""
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, (str, torch.device)):
        try:
            return torch.device(value).type == "cuda"
        except RuntimeError:
            return False
    return False


def _cpu_type_name(name: str) -> str:
    """``torch.cuda.FloatTensor`` -> ``torch.FloatTensor``."""
    return name.replace("torch.cuda.", "torch.", 1) if isinstance(name, str) else name


class _CudaMeansCpuMode(TorchFunctionMode):
    """Rewrites CUDA placement requests made by torch calls into CPU placements."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:  # tensor.cuda(...): already where it belongs
            return args[0]
        if func is torch.Tensor.type:
            if len(args) == 1 and "dtype" not in kwargs:  # query: report the CUDA name upstream checks for
                name = func(*args, **kwargs)
                return name if name.startswith("torch.cuda.") else name.replace("torch.", "torch.cuda.", 1)
            args = (args[0], *(_cpu_type_name(a) for a in args[1:]))  # conversion: stay on the CPU
            if "dtype" in kwargs:
                kwargs["dtype"] = _cpu_type_name(kwargs["dtype"])
        if _is_cuda_device(kwargs.get("device")):
            kwargs["device"] = "cpu"
        if kwargs.get("pin_memory"):  # pinning needs a CUDA runtime and buys nothing here
            kwargs["pin_memory"] = False
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda_device(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


_ORIGINAL_CURRENT_DEVICE = torch.cuda.current_device
_ORIGINAL_SYNCHRONIZE = torch.cuda.synchronize


def _current_device() -> int:
    """``torch.cuda.current_device`` that answers 0 (then mapped to the CPU) inside a scope."""
    if _in_scope():
        return 0
    return _ORIGINAL_CURRENT_DEVICE()


def _synchronize(device: Any = None) -> None:
    """``torch.cuda.synchronize`` that is a no-op inside a scope (CPU ops are synchronous)."""
    if _in_scope():
        return None
    return _ORIGINAL_SYNCHRONIZE(device)


@contextlib.contextmanager
def cuda_means_cpu() -> Iterator[None]:
    """Run a block of CUDA-assuming upstream code on the CPU.

    Inside the block a ``TorchFunctionMode`` resolves CUDA device requests to the CPU, makes ``Tensor.cuda()``
    a no-op and lets ``Tensor.type()`` report the CUDA type name (so CUDA-only type checks accept CPU
    tensors); and, on the calling thread only, ``torch.cuda.current_device()`` returns 0 and
    ``torch.cuda.synchronize()`` does nothing (:func:`enable_cpu_compat` installs thin wrappers for those two
    that defer to stock torch outside a scope).  Outside a scope ``torch.cuda`` behaves as stock (on a
    CPU-only build it still raises), so code that is not on the list is not silently changed.
    """
    _scope.depth = getattr(_scope, "depth", 0) + 1
    try:
        with _CudaMeansCpuMode():
            yield
    finally:
        _scope.depth -= 1


def _run_on_cpu(fn: Callable) -> Callable:
    """Wrap ``fn`` so every call runs inside :func:`cuda_means_cpu`."""
    if getattr(fn, _WRAPPED, False):
        return fn

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with cuda_means_cpu():
            return fn(*args, **kwargs)

    setattr(wrapper, _WRAPPED, True)
    return wrapper


# ---------------------------------------------------------------------------------------------------
# RNG
# ---------------------------------------------------------------------------------------------------

class CpuRNGStatesTracker(_random.CudaRNGStatesTracker):
    """Megatron's RNG tracker, keeping each named state as a state of the CPU generator.

    ``add(name, seed)`` records the state a CPU generator has after ``manual_seed(seed)``; ``fork(name)``
    swaps that state into the global CPU generator for the block and stores the advanced state back
    afterwards -- what the stock tracker does with the CUDA generator. (The stock ``fork`` would also
    warn on every call that "the CPU RNG state changed", which here is the point.)
    """

    def __init__(self, use_cudagraphable_rng: bool = False, is_inference_rng_tracker: bool = False):
        if use_cudagraphable_rng:
            raise ValueError("CUDA-graph-safe RNG states do not exist on the CPU")
        super().__init__(use_cudagraphable_rng=False, is_inference_rng_tracker=is_inference_rng_tracker)

    def add(self, name: str, seed: int) -> None:
        self._is_initialized = True
        if seed in self.seeds_:
            raise Exception(f"seed {seed} already exists")
        if name in self.states_:
            raise Exception(f"rng state {name} already exists")
        self.seeds_.add(seed)
        self.states_[name] = torch.Generator().manual_seed(seed).get_state()

    @contextlib.contextmanager
    def fork(self, name: str = _random._MODEL_PARALLEL_RNG_TRACKER_NAME):
        if name not in self.states_:
            raise Exception(f"rng state {name} is not added")
        outer_name, outer_state = self._current_state_name, torch.get_rng_state()
        if outer_name != "default-rng":  # nested fork: park the outer tracked state
            self.states_[outer_name] = outer_state
        torch.set_rng_state(self.states_[name])
        self._current_state_name = name
        try:
            yield
        finally:
            self.states_[name] = torch.get_rng_state()
            if outer_name != "default-rng":
                outer_state = self.states_[outer_name]
            torch.set_rng_state(outer_state)
            self._current_state_name = outer_name


def _get_cpu_rng_state(device: Any = None, clone: bool = False, graph_safe: bool = False) -> torch.Tensor:
    """Stand-in for ``random._get_cuda_rng_state``: the CPU generator's state."""
    return torch.get_rng_state()


def _set_cpu_rng_state(new_state: torch.Tensor, device: Any = -1, graph_safe: bool = False) -> None:
    """Stand-in for ``random._set_cuda_rng_state``: set the CPU generator's state."""
    torch.set_rng_state(new_state)


def _seed_cpu_generator_too(original: Callable) -> Callable:
    """Wrap ``model_parallel_cuda_manual_seed`` so the default generator gets the data-parallel seed.

    On CUDA it seeds the default CUDA generator with ``seed`` (dropout outside tensor-parallel regions
    draws from it); on the CPU that generator is the CPU one.
    """
    if getattr(original, _WRAPPED, False):
        return original

    @functools.wraps(original)
    def wrapper(seed: int, *args, **kwargs):
        torch.manual_seed(seed)
        return original(seed, *args, **kwargs)

    setattr(wrapper, _WRAPPED, True)
    return wrapper


# ---------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------

def _cpu_config_defaults(original_post_init: Callable) -> Callable:
    """Wrap ``ModelParallelConfig.__post_init__`` to set the two settings a CPU run needs.

    - ``use_cpu_initialization=True``: otherwise layers create parameters on
      ``torch.cuda.current_device()``; megatron has no other way to build them on the CPU.  It also makes
      initialisation independent of the tensor-parallel size (the full master weight is drawn, then split).
    - ``batch_p2p_comm=False``: the batched pipeline p2p path posts ``send_prev, recv_prev, send_next,
      recv_next`` to one group. With two pipeline ranks ``prev == next``, and gloo matches messages
      between a pair in posting order, so activations and gradients are swapped whenever both directions
      travel at once (the interleaved schedule's steady state) -- silently, as the shapes agree. The
      unbatched path sends the two directions through different groups when the pipeline has two ranks.
    """
    if getattr(original_post_init, _WRAPPED, False):
        return original_post_init

    @functools.wraps(original_post_init)
    def __post_init__(self):
        self.use_cpu_initialization = True
        self.batch_p2p_comm = False
        original_post_init(self)

    setattr(__post_init__, _WRAPPED, True)
    return __post_init__


# ---------------------------------------------------------------------------------------------------
# The patch table
# ---------------------------------------------------------------------------------------------------

# (module, upstream attribute, how to rewrite it, why). A dotted path patches a class attribute (every
# subclass and caller sees it); a plain name patches a module attribute and every loaded module that
# bound the same object with `from m import f`.
PATCHES: list[tuple[str, str, Callable[[Callable], Callable], str]] = [
    # --- RNG -----------------------------------------------------------------------------------
    ("megatron.core.tensor_parallel.random", "CudaRNGStatesTracker", lambda _: CpuRNGStatesTracker,
     "initialize_rng_tracker instantiates this class; the stock one seeds/reads CUDA generators"),
    ("megatron.core.tensor_parallel.random", "_get_cuda_rng_state", lambda _: _get_cpu_rng_state,
     "activation recompute (CheckpointFunction) snapshots 'the CUDA RNG' through it"),
    ("megatron.core.tensor_parallel.random", "_set_cuda_rng_state", lambda _: _set_cpu_rng_state,
     "...and restores it through this one (stock: a silent no-op on CPU-only torch, but with a GPU "
     "present it would load a CPU generator state into the CUDA generator)"),
    ("megatron.core.tensor_parallel.random", "model_parallel_cuda_manual_seed", _seed_cpu_generator_too,
     "it seeds the default CUDA generator with the data-parallel seed; on CPU that is torch.manual_seed"),
    # --- config --------------------------------------------------------------------------------
    ("megatron.core.model_parallel_config", "ModelParallelConfig.__post_init__", _cpu_config_defaults,
     "use_cpu_initialization (else parameters go to torch.cuda.current_device()) and no batched p2p "
     "(gloo swaps activations and gradients between two pipeline ranks)"),
    # --- model forward -------------------------------------------------------------------------
    ("megatron.core.utils", "GlobalMemoryBuffer.get_tensor", _run_on_cpu,
     "DotProductAttention's score buffer is allocated on torch.cuda.current_device()"),
    ("megatron.core.models.common.embeddings.rotary_pos_embedding", "RotaryEmbedding.get_emb", _run_on_cpu,
     "it moves inv_freq to torch.cuda.current_device() on first use"),
    ("megatron.core.transformer.utils", "get_default_causal_mask", _run_on_cpu,
     "the implicit causal mask (attention_mask=None) is built with device='cuda'"),
    ("megatron.core.models.common.language_module.language_module",
     "LanguageModule.setup_embeddings_and_output_layer", _run_on_cpu,
     "with PP > 1 the tied embedding copy is moved with .cuda() before its all-reduce"),
    ("megatron.core.tensor_parallel.mappings", "_gather_along_last_dim", _run_on_cpu,
     "gather_from_tensor_model_parallel_region (vocab-parallel logits) allocates its output on "
     "torch.cuda.current_device()"),
    # --- pipeline schedules (p2p buffers run inside them) -----------------------------------------
    ("megatron.core.pipeline_parallel.schedules", "forward_backward_no_pipelining", _run_on_cpu,
     "total_num_tokens is created with device='cuda'"),
    ("megatron.core.pipeline_parallel.schedules", "forward_backward_pipelining_without_interleaving",
     _run_on_cpu, "device='cuda' token counter; P2PCommunicator allocates its receive buffers on "
     "torch.cuda.current_device()"),
    ("megatron.core.pipeline_parallel.schedules", "forward_backward_pipelining_with_interleaving",
     _run_on_cpu, "same as the non-interleaved schedule"),
    # --- data-parallel wrapper and optimiser ------------------------------------------------------
    ("megatron.core.distributed.param_and_grad_buffer", "_ParamAndGradBuffer.__init__", _run_on_cpu,
     "DDP's contiguous param/grad buffers are allocated on torch.cuda.current_device()"),
    ("megatron.core.optimizer.optimizer", "FP32Optimizer.__init__", _run_on_cpu,
     "the unit loss scale is a device='cuda' tensor"),
    ("megatron.core.optimizer.optimizer", "MixedPrecisionOptimizer.__init__", _run_on_cpu,
     "found_inf / overflow buffer / unit scale are device='cuda' tensors (distributed optimizer too)"),
    ("megatron.core.optimizer.optimizer", "Float16OptimizerWithFloat16Params.__init__", _run_on_cpu,
     "bf16/fp16 params are accepted only by type() == 'torch.cuda.BFloat16Tensor' / 'HalfTensor'"),
    ("megatron.core.optimizer.grad_scaler", "MegatronGradScaler.__init__", _run_on_cpu,
     "the fp16 loss scale is a device='cuda' tensor"),
    ("megatron.core.optimizer.grad_scaler", "DynamicGradScaler.__init__", _run_on_cpu,
     "...and so are the dynamic scaler's growth/backoff factors"),
    ("megatron.core.optimizer.distrib_optimizer", "DistributedOptimizer._build_model_and_main_param_groups",
     _run_on_cpu, "fp32 params are recognised only by type() == 'torch.cuda.FloatTensor'"),
    ("megatron.core.optimizer.distrib_optimizer", "DistributedOptimizer.get_parameter_state_dp_zero",
     _run_on_cpu, "the fully reshardable checkpoint format gathers optimizer state through "
     "torch.cuda.current_device() buffers"),
    ("megatron.core.optimizer.distrib_optimizer",
     "DistributedOptimizer.load_parameter_state_from_fully_reshardable", _run_on_cpu,
     "...and scatters it back on load the same way"),
    ("megatron.core.optimizer.clip_grads", "get_grad_norm_fp32", _run_on_cpu,
     "norm buffers are device='cuda' (also in the local multi_tensor_l2norm fallback)"),
    ("megatron.core.optimizer.clip_grads", "clip_grad_by_total_norm_fp32", _run_on_cpu,
     "asserts grad.type() == 'torch.cuda.FloatTensor' and uses a device='cuda' overflow buffer"),
    ("megatron.core.optimizer.clip_grads", "count_zeros_fp32", _run_on_cpu,
     "the zero counter is a device='cuda' tensor"),
    # --- distributed checkpointing ----------------------------------------------------------------
    ("megatron.core.dist_checkpointing.serialization", "save", _run_on_cpu,
     "the torch_dist writer calls torch.cuda.synchronize() after staging tensors and broadcasts its "
     "failure flag in a torch.cuda.current_device() tensor (load needs no patch)"),
    ("megatron.core.dist_checkpointing.strategies.async_utils", "AsyncCallsQueue.schedule_async_request",
     _run_on_cpu, "async save: the caller calls torch.cuda.synchronize() after staging tensors"),
    ("megatron.core.dist_checkpointing.strategies.async_utils", "AsyncCallsQueue.maybe_finalize_async_calls",
     _run_on_cpu, "async save: completion is agreed on through torch.cuda.current_device() tensors"),
]


def _resolve(module_name: str, path: str) -> tuple[Any, str]:
    """(owner object, attribute name) for ``module_name`` + dotted ``path``."""
    owner: Any = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return owner, name


def _rebind_imported_copies(replacements: dict[int, tuple[Any, Any]]) -> None:
    """Point every module attribute that is a patched original at its replacement.

    ``replacements`` maps ``id(original)`` to ``(original, replacement)``. Modules that did
    ``from megatron.core.x import f`` before the patch hold their own reference to ``f``; this finds them
    (in megatron and elsewhere) by identity, so only those exact objects are touched.
    """
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            hit = replacements.get(id(value))
            if hit is not None and hit[0] is value:
                setattr(module, attr, hit[1])


def _apply(module_name: str, path: str, rewrite: Callable[[Callable], Callable]) -> tuple[Any, Any] | None:
    """Apply one patch; return ``(original, replacement)`` for a module-level name, else None."""
    owner, name = _resolve(module_name, path)
    original = vars(owner)[name] if isinstance(owner, type) else getattr(owner, name)
    descriptor = type(original) if isinstance(original, (classmethod, staticmethod)) else None
    function = original.__func__ if descriptor else original
    if getattr(function, _WRAPPED, False):
        return None
    replacement = rewrite(function)
    setattr(replacement, _WRAPPED, True)
    setattr(owner, name, descriptor(replacement) if descriptor else replacement)
    return None if isinstance(owner, type) else (original, replacement)


def _reset_rng_tracker() -> None:
    """Drop a tracker created before compat was enabled, so the next use builds a CPU one."""
    tracker = _random._CUDA_RNG_STATE_TRACKER
    if tracker is not None and not isinstance(tracker, CpuRNGStatesTracker):
        _random.initialize_rng_tracker(force_reset=True)


def enable_cpu_compat() -> None:
    """Patch megatron-core 0.16.1 to run on the CPU (idempotent; see :data:`PATCHES`).

    Call it before seeding (``model_parallel_cuda_manual_seed``): a tracker created earlier is replaced
    by an empty CPU one.
    """
    global _enabled
    with _lock:
        if _enabled:
            return
        torch.cuda.current_device = _current_device
        torch.cuda.synchronize = _synchronize
        replacements = {}
        for module_name, path, rewrite, _why in PATCHES:
            pair = _apply(module_name, path, rewrite)
            if pair is not None:
                replacements[id(pair[0])] = pair
        _rebind_imported_copies(replacements)
        _reset_rng_tracker()
        _enabled = True
