"""Core attention for the GPT layers: one megatron ``core_attention`` submodule per backend.

megatron-core's local layer spec computes attention with ``DotProductAttention``: it materialises the
``[b, heads, s, s]`` scores, masks them with the dense boolean mask and runs an unfused softmax.  Packed rows
need a *document* mask (tokens see only their own document) and PREFIX-CODE needs a *prefix* mask (the
docstring sees itself bidirectionally), so the causal-only fused kernels do not apply as such.  This module
swaps ``core_attention`` in megatron's local spec (:func:`layer_spec`) for one of ``sdpa`` (the default;
runs everywhere), ``flex`` (FlexAttention block mask), ``te`` (Transformer Engine, when installed) or
``unfused`` (megatron's own, the reference); :data:`BACKENDS` describes each.

All take megatron's mask convention (a boolean tensor, True = masked, or None for causal); the model
converts it once per batch with :meth:`AttentionMask.prepare`.

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

from megatron_t2c.models.config import resolve_backend

__all__ = ["AttentionMask", "SDPAAttention", "FlexCoreAttention", "ColumnParallelLinearNoBias", "core_attention_spec",
           "layer_spec"]

#: The backends (names, descriptions, :func:`resolve_backend`) are declared in :mod:`megatron_t2c.models.config`.
# ---------------------------------------------------------------------------------------------------
# The mask, prepared once per batch
# ---------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _flex_attention(device_type: str):
    """FlexAttention, compiled on CUDA (eager is an unfused reference there); eager elsewhere."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False) if device_type == "cuda" else flex_attention


def _causal(sq: int, sk: int, device: torch.device) -> torch.Tensor:
    """``[sq, sk]`` True where a query may attend causally (queries are the last ``sq`` of ``sk`` positions)."""
    return torch.ones(sq, sk, dtype=torch.bool, device=device).tril(sk - sq)


def _band(left: int, sq: int, sk: int, device: torch.device) -> torch.Tensor:
    """``[sq, sk]`` True where key ``j`` is at most ``left`` positions before query ``i`` (bottom-right aligned):
    GPT-Neo's local attention with a window of ``left + 1`` tokens."""
    q = torch.arange(sk - sq, sk, device=device)[:, None]
    return q - torch.arange(sk, device=device)[None, :] <= left


def _block_mask(masked: Optional[torch.Tensor], batch: int, sq: int, sk: int, device: torch.device,
                window: Optional[int] = None):
    """FlexAttention ``BlockMask`` for megatron's dense mask (True = masked); None means causal.  ``window``:
    also keep keys at most that many positions before the query (a sliding window)."""
    from torch.nn.attention.flex_attention import create_block_mask

    offset = sk - sq  # bottom-right aligned when queries are the last sq of sk positions

    def in_window(q, kv):
        return (q + offset - kv <= window) if window is not None else (q >= 0)

    if masked is None:
        def mask_mod(b, h, q, kv):
            return (kv <= q + offset) & in_window(q, kv)

        return create_block_mask(mask_mod, None, None, sq, sk, device=device)

    rows = masked[:, 0]  # [b or 1, sq, sk]: torch 2.6's vmap cannot mix an int index with the batched ones

    def mask_mod(b, h, q, kv):  # noqa: F811 - reads the dense mask; exact for any mask shape
        return ~rows[b, q, kv] & in_window(q, kv)

    return create_block_mask(mask_mod, masked.shape[0], None, sq, sk, device=device)


@dataclasses.dataclass(eq=False)
class AttentionMask:
    """The batch's attention mask in the form a backend consumes, shared by all layers of a forward pass.

    Megatron's mask is a boolean ``[b or 1, 1, sq, sk]`` tensor, True = masked, or None for plain causal
    attention.  :meth:`prepare` converts it once per batch into the form the backend wants (``sdpa``/``flex``
    then receive an :class:`AttentionMask`; a raw tensor still works: it is converted per layer, which is
    what happens under activation recompute, whose checkpoint function only passes tensors).  Every query
    row must keep at least one visible key (the diagonal always is in causal, document and prefix masks),
    else SDPA returns NaN for that row.

    Attributes:
        backend: ``sdpa`` or ``flex``.
        allowed: ``sdpa``: boolean ``[b or 1, 1, sq, sk]``, True = may attend (SDPA's convention), or None
            for causal attention.
        block_mask: ``flex``: the ``BlockMask``.
    """

    backend: str
    allowed: Optional[torch.Tensor] = None
    block_mask: object = None
    masked: Optional[torch.Tensor] = None  # megatron's mask as given (flex: the source of windowed variants)
    seq_length: int = 0
    _windowed: dict = dataclasses.field(default_factory=dict, repr=False)

    def windowed(self, left: int, sq: int, sk: int, device: torch.device):
        """This mask restricted to a causal sliding window (query ``i`` sees keys ``i-left .. i``, positions
        bottom-right aligned): ``sdpa``: the boolean allowed tensor; ``flex``: a block mask, built once per
        window size and batch (local layers share it)."""
        key = (left, sq, sk)
        if key not in self._windowed:
            if self.backend == "sdpa":
                base = self.allowed if self.allowed is not None else _causal(sq, sk, device)
                self._windowed[key] = base & _band(left, sq, sk, device)
            else:
                self._windowed[key] = _block_mask(self.masked, self.masked.shape[0] if self.masked is not None
                                                  else 1, sq, sk, device, window=left)
        return self._windowed[key]

    @classmethod
    def prepare(cls, masked: Optional[torch.Tensor], backend: str, *, batch: int, seq_length: int,
                device: torch.device):
        """Convert megatron's mask (True = masked, or None = causal) for ``backend``.

        Returns an :class:`AttentionMask` for ``sdpa``/``flex`` and ``masked`` itself for the backends that
        take megatron's tensor (``unfused``, ``te``).
        """
        backend = resolve_backend(backend)
        if backend == "sdpa":
            return cls("sdpa", allowed=None if masked is None else ~masked, masked=masked, seq_length=seq_length)
        if backend == "flex":
            sq, sk = (seq_length, seq_length) if masked is None else masked.shape[-2:]
            return cls("flex", block_mask=_block_mask(masked, batch, sq, sk, device), masked=masked,
                       seq_length=seq_length)
        return masked


# ---------------------------------------------------------------------------------------------------
# Core-attention modules
# ---------------------------------------------------------------------------------------------------

def _layer_window(config: TransformerConfig, layer_number: int) -> Optional[int]:
    """How many positions back a query of this layer may look (None: the whole causal context)."""
    from megatron.core.transformer.utils import is_layer_window_attention

    if not is_layer_window_attention(config.window_size, config.window_attn_skip_freq, layer_number):
        return None
    left, right = config.window_size
    if right != 0:
        raise NotImplementedError(f"window_size {config.window_size}: a causal LM needs right = 0")
    return None if left < 0 else int(left)


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
        if config.softmax_type != "vanilla":
            raise NotImplementedError(f"{self.backend} attention supports the vanilla softmax only")
        #: the causal sliding window of this layer (keys at most ``window`` positions back), or None: megatron's
        #: ``window_size=(left, 0)`` on the layers ``window_attn_skip_freq`` selects (GPT-Neo's local layers)
        self.window = _layer_window(config, max(1, layer_number))
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
        if softmax_scale is None:  # megatron's SelfAttention passes config.softmax_scale; built alone, read it
            softmax_scale = config.softmax_scale
        self.softmax_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout

    def _inputs(self, query, key, value, attention_mask, attention_bias, packed_seq_params):
        """The batch's :class:`AttentionMask` (prepared here when a raw tensor comes, e.g. under activation
        recompute) and ``q, k, v`` heads-first."""
        if attention_bias is not None or packed_seq_params is not None:
            raise NotImplementedError(f"{self.backend} attention takes neither attention_bias nor "
                                      "packed sequences (THD): pass a dense document mask instead")
        if not isinstance(attention_mask, AttentionMask):
            attention_mask = AttentionMask.prepare(attention_mask, self.backend, batch=query.shape[1],
                                                   seq_length=query.shape[0], device=query.device)
        return attention_mask, tuple(self._heads_first(t) for t in (query, key, value))

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
        attention_mask, (q, k, v) = self._inputs(query, key, value, attention_mask, attention_bias,
                                                 packed_seq_params)
        allowed = attention_mask.allowed
        mask_type = attn_mask_type or self.attn_mask_type
        if self.window is not None:  # a local layer: the batch's mask within the sliding window
            allowed = attention_mask.windowed(self.window, q.shape[2], k.shape[2], q.device)
        is_causal = allowed is None and mask_type == AttnMaskType.causal and q.shape[2] > 1
        if is_causal and q.shape[2] != k.shape[2]:  # SDPA's is_causal is top-left aligned
            allowed = _causal(q.shape[2], k.shape[2], q.device)
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
        attention_mask, (q, k, v) = self._inputs(query, key, value, attention_mask, attention_bias,
                                                 packed_seq_params)
        flex = _flex_attention(q.device.type)
        with warnings.catch_warnings():
            # off CUDA the eager kernel is the only one; torch warns that it is not the compiled one
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            block_mask = attention_mask.block_mask if self.window is None else \
                attention_mask.windowed(self.window, q.shape[2], k.shape[2], q.device)
            out = flex(q, k, v, block_mask=block_mask, scale=self.softmax_scale,
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


class ColumnParallelLinearNoBias(tensor_parallel.ColumnParallelLinear):
    """megatron's ``ColumnParallelLinear`` that never has a bias, whatever ``bias`` its builder asks for.

    megatron's ``SelfAttention`` builds ``linear_qkv`` with ``bias=add_bias_linear or add_qkv_bias``; GPT-Neo's
    q/k/v projections have no bias while its output projection and MLP do.  With no parameter at all (rather
    than a zero, frozen one) the state dict, the optimizer and an export hold exactly GPT-Neo's tensors.
    The sharding (output columns split over tensor-parallel ranks) is ``ColumnParallelLinear``'s own.
    """

    def __init__(self, *args, bias: bool = True, **kwargs):
        super().__init__(*args, bias=False, **kwargs)


def layer_spec(backend: str = "sdpa", qkv_bias: bool = True) -> ModuleSpec:
    """megatron's local GPT layer spec with ``core_attention`` for ``backend``; ``qkv_bias=False``: the fused
    query/key/value projection has no bias parameter (:class:`ColumnParallelLinearNoBias`).

    ``te`` also switches the self-attention's mask type to ``arbitrary``, so that Transformer Engine
    applies the dense document/prefix mask instead of its built-in causal mask.
    """
    backend = resolve_backend(backend)
    spec = get_gpt_layer_local_spec()
    attention = spec.submodules.self_attention
    attention.submodules = dataclasses.replace(attention.submodules,
                                               core_attention=core_attention_spec(backend))
    if not qkv_bias:
        attention.submodules = dataclasses.replace(attention.submodules, linear_qkv=ColumnParallelLinearNoBias)
    if backend == "te":
        attention.params = {**attention.params, "attn_mask_type": AttnMaskType.arbitrary}
    return spec
