"""Core attention for the GPT layers: one megatron ``core_attention`` submodule per backend.

megatron-core's local layer spec computes attention with ``DotProductAttention``: it materialises the
``[b, heads, s, s]`` scores, masks them with the dense boolean mask and runs an unfused softmax.  Packed rows
need a *document* mask (tokens see only their own document) and PREFIX-CODE needs a *prefix* mask (the
docstring sees itself bidirectionally), so the causal-only fused kernels do not apply as such.  This module
swaps ``core_attention`` in megatron's local spec (:func:`layer_spec`) for one of:

``sdpa``
    ``torch.nn.functional.scaled_dot_product_attention`` with a dense boolean mask (torch picks a kernel
    that takes one; without a mask it runs causal-only).  Works everywhere; the tests' backend.
``flex``
    FlexAttention with a ``BlockMask``: fully masked blocks are skipped, fully visible ones need no mask.
    The block mask is built once per batch (:meth:`AttentionMask.prepare`) and shared by every layer.  No
    attention dropout.  On CUDA the kernel is compiled with ``torch.compile``; on the CPU (torch 2.13) it runs
    eagerly and only forward.  Not measured on a GPU in this repository's tests.
``te``
    Transformer Engine's ``TEDotProductAttention`` with an arbitrary mask, when Transformer Engine is
    installed (detected, never required).
``unfused``
    megatron's own ``DotProductAttention`` (the reference).

All take megatron's mask convention: a boolean ``[b or 1, 1, sq, sk]`` tensor, True = masked, or None for
plain causal attention.  The model converts it once per batch with :meth:`AttentionMask.prepare` into the
form the backend wants (``sdpa``/``flex`` then receive an :class:`AttentionMask`; a raw tensor still works:
it is converted per layer, which is what happens under activation recompute, whose checkpoint function only
passes tensors).  Every query row must keep at least one visible key (the diagonal always is in causal,
document and prefix masks), else SDPA returns NaN for that row.

Positions (learned absolute or RoPE) are applied by megatron's ``SelfAttention`` before core attention;
dropout draws from megatron's model-parallel RNG tracker, as ``DotProductAttention`` does.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.process_groups_config import ProcessGroupCollection
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.utils import divide

__all__ = ["BACKENDS", "te_available", "resolve_backend", "AttentionMask", "SDPAAttention",
           "FlexCoreAttention", "core_attention_spec", "layer_spec"]

#: Backend names accepted by :func:`layer_spec` (``auto`` = ``sdpa``).
BACKENDS = ("sdpa", "flex", "te", "unfused", "auto")


def te_available() -> bool:
    """Whether Transformer Engine is importable through megatron-core's extension."""
    try:
        from megatron.core.extensions import transformer_engine as te_ext
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return bool(getattr(te_ext, "HAVE_TE", False))


def resolve_backend(name: str) -> str:
    """Validate ``name`` and resolve ``auto`` (``sdpa``: it runs everywhere and was the fastest dense-mask
    kernel measured on an H200, see the design notes)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose from {', '.join(BACKENDS)}")
    if name == "auto":
        return "sdpa"
    if name == "te" and not te_available():
        raise RuntimeError("attention backend 'te' needs Transformer Engine, which is not installed")
    return name


# ---------------------------------------------------------------------------------------------------
# The mask, prepared once per batch
# ---------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _flex_attention(device_type: str):
    """FlexAttention, compiled on CUDA (eager is an unfused reference there); eager elsewhere."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False) if device_type == "cuda" else flex_attention


def _block_mask(masked: Optional[torch.Tensor], batch: int, sq: int, sk: int, device: torch.device):
    """FlexAttention ``BlockMask`` for megatron's dense mask (True = masked); None means causal."""
    from torch.nn.attention.flex_attention import create_block_mask

    if masked is None:
        offset = sk - sq  # bottom-right aligned when queries are the last sq of sk positions

        def mask_mod(b, h, q, kv):
            return kv <= q + offset

        return create_block_mask(mask_mod, None, None, sq, sk, device=device)

    rows = masked[:, 0]  # [b or 1, sq, sk]: torch 2.6's vmap cannot mix an int index with the batched ones

    def mask_mod(b, h, q, kv):  # noqa: F811 - reads the dense mask; exact for any mask shape
        return ~rows[b, q, kv]

    return create_block_mask(mask_mod, masked.shape[0], None, sq, sk, device=device)


@dataclasses.dataclass(eq=False)
class AttentionMask:
    """The batch's attention mask in the form a backend consumes, shared by all layers of a forward pass.

    Attributes:
        backend: ``sdpa`` or ``flex``.
        allowed: ``sdpa``: boolean ``[b or 1, 1, sq, sk]``, True = may attend (SDPA's convention), or None
            for causal attention.
        block_mask: ``flex``: the ``BlockMask``.
    """

    backend: str
    allowed: Optional[torch.Tensor] = None
    block_mask: object = None

    @classmethod
    def prepare(cls, masked: Optional[torch.Tensor], backend: str, *, batch: int, seq_length: int,
                device: torch.device):
        """Convert megatron's mask (True = masked, or None = causal) for ``backend``.

        Returns an :class:`AttentionMask` for ``sdpa``/``flex`` and ``masked`` itself for the backends that
        take megatron's tensor (``unfused``, ``te``).
        """
        backend = resolve_backend(backend)
        if backend == "sdpa":
            return cls("sdpa", allowed=None if masked is None else ~masked)
        if backend == "flex":
            sq, sk = (seq_length, seq_length) if masked is None else masked.shape[-2:]
            return cls("flex", block_mask=_block_mask(masked, batch, sq, sk, device))
        return masked


# ---------------------------------------------------------------------------------------------------
# Core-attention modules
# ---------------------------------------------------------------------------------------------------

class _CoreAttention(MegatronModule):
    """Shared set-up of the torch-kernel backends; the constructor is megatron's core-attention builder
    signature (``CoreAttentionBuilder``), so the class drops into a layer spec's ``core_attention``.

    Input ``query [sq, b, heads/p, d]``, ``key``/``value [sk, b, groups/p, d]``; output ``[sq, b, heads/p*d]``.
    """

    backend = ""

    def __init__(self, config: TransformerConfig, layer_number: int, attn_mask_type: AttnMaskType,
                 attention_type: str, attention_dropout: Optional[float] = None,
                 softmax_scale: Optional[float] = None, cp_comm_type: Optional[str] = None,
                 pg_collection: Optional[ProcessGroupCollection] = None):
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise NotImplementedError(f"{self.backend} attention does not support context parallelism")
        if config.softmax_type != "vanilla" or config.window_size is not None:
            raise NotImplementedError(f"{self.backend} attention supports vanilla full-window softmax only")
        if pg_collection is None:
            pg_collection = ProcessGroupCollection.use_mpu_process_groups(required_pgs=["tp"])
        tp_size = pg_collection.tp.size()
        self.layer_number = max(1, layer_number)
        self.attn_mask_type = attn_mask_type
        self.heads_per_partition = divide(config.num_attention_heads, tp_size)
        self.groups_per_partition = divide(config.num_query_groups, tp_size)
        head_dim = config.kv_channels
        # apply_query_key_layer_scaling divides the scale by the layer number and multiplies it back in
        # the softmax (an fp16 overflow guard); the kernels here compute the softmax in fp32, so the net
        # scale is the same.
        self.softmax_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout

    def _check_inputs(self, attention_bias, packed_seq_params) -> None:
        if attention_bias is not None or packed_seq_params is not None:
            raise NotImplementedError(f"{self.backend} attention takes neither attention_bias nor "
                                      "packed sequences (THD): pass a dense document mask instead")

    @staticmethod
    def _heads_first(x: torch.Tensor) -> torch.Tensor:
        """``[s, b, n, d]`` -> ``[b, n, s, d]`` (a view)."""
        return x.permute(1, 2, 0, 3)

    @staticmethod
    def _sequence_first(out: torch.Tensor) -> torch.Tensor:
        """``[b, n, s, d]`` -> ``[s, b, n*d]``."""
        b, n, s, d = out.shape
        return out.permute(2, 0, 1, 3).reshape(s, b, n * d)


class SDPAAttention(_CoreAttention):
    """Core attention with ``torch.nn.functional.scaled_dot_product_attention`` and a dense boolean mask."""

    backend = "sdpa"

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask,
                attn_mask_type: Optional[AttnMaskType] = None, attention_bias=None, packed_seq_params=None):
        self._check_inputs(attention_bias, packed_seq_params)
        if not isinstance(attention_mask, AttentionMask):
            attention_mask = AttentionMask.prepare(attention_mask, "sdpa", batch=query.shape[1],
                                                   seq_length=query.shape[0], device=query.device)
        q, k, v = (self._heads_first(t) for t in (query, key, value))
        allowed = attention_mask.allowed
        mask_type = attn_mask_type or self.attn_mask_type
        is_causal = allowed is None and mask_type == AttnMaskType.causal and q.shape[2] > 1
        if is_causal and q.shape[2] != k.shape[2]:  # SDPA's is_causal is top-left aligned
            sq, sk = q.shape[2], k.shape[2]
            allowed = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril(sk - sq)
            is_causal = False
        dropout_p = self.dropout_p if self.training else 0.0
        kwargs = dict(attn_mask=allowed, dropout_p=dropout_p, is_causal=is_causal, scale=self.softmax_scale,
                      enable_gqa=self.heads_per_partition != self.groups_per_partition)
        if dropout_p > 0.0 and not self.config.sequence_parallel:
            with tensor_parallel.get_cuda_rng_tracker().fork():
                out = F.scaled_dot_product_attention(q, k, v, **kwargs)
        else:
            out = F.scaled_dot_product_attention(q, k, v, **kwargs)
        return self._sequence_first(out)


class FlexCoreAttention(_CoreAttention):
    """Core attention with FlexAttention and a block mask built once per batch."""

    backend = "flex"

    def __init__(self, config: TransformerConfig, *args, attention_dropout: Optional[float] = None, **kwargs):
        super().__init__(config, *args, attention_dropout=attention_dropout, **kwargs)
        if self.dropout_p > 0.0:
            raise ValueError("FlexAttention has no attention dropout: set attention_dropout=0 "
                             "or use the sdpa backend")

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask,
                attn_mask_type: Optional[AttnMaskType] = None, attention_bias=None, packed_seq_params=None):
        self._check_inputs(attention_bias, packed_seq_params)
        if not isinstance(attention_mask, AttentionMask):
            attention_mask = AttentionMask.prepare(attention_mask, "flex", batch=query.shape[1],
                                                   seq_length=query.shape[0], device=query.device)
        q, k, v = (self._heads_first(t) for t in (query, key, value))
        flex = _flex_attention(q.device.type)
        with warnings.catch_warnings():
            # off CUDA the eager kernel is the only one; torch warns that it is not the compiled one
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            out = flex(q, k, v, block_mask=attention_mask.block_mask, scale=self.softmax_scale,
                       enable_gqa=self.heads_per_partition != self.groups_per_partition)
        return self._sequence_first(out)


# ---------------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------------

def core_attention_spec(backend: str):
    """The ``core_attention`` submodule for ``backend`` (a ModuleSpec or megatron's own class)."""
    backend = resolve_backend(backend)
    if backend == "sdpa":
        return ModuleSpec(module=SDPAAttention)
    if backend == "flex":
        return ModuleSpec(module=FlexCoreAttention)
    if backend == "te":
        from megatron.core.extensions.transformer_engine import TEDotProductAttention

        return TEDotProductAttention
    from megatron.core.transformer.dot_product_attention import DotProductAttention

    return DotProductAttention


def layer_spec(backend: str = "sdpa") -> ModuleSpec:
    """megatron's local GPT layer spec with ``core_attention`` for ``backend``.

    ``te`` also switches the self-attention's mask type to ``arbitrary``, so that Transformer Engine
    applies the dense document/prefix mask instead of its built-in causal mask.
    """
    backend = resolve_backend(backend)
    spec = get_gpt_layer_local_spec()
    attention = spec.submodules.self_attention
    attention.submodules = dataclasses.replace(attention.submodules,
                                               core_attention=core_attention_spec(backend))
    if backend == "te":
        attention.params = {**attention.params, "attn_mask_type": AttnMaskType.arbitrary}
    return spec
