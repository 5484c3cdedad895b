"""The one description of the model architecture: the paper's presets and :class:`ModelConfig`.

:class:`ModelConfig` (a preset plus overrides, exposed on the command line through
:func:`megatron_t2c.utils.dataclass_flags.option`) is what every other view of the architecture derives
from: megatron's ``TransformerConfig`` (:meth:`ModelConfig.transformer_config`), the architecture a
checkpoint records and is compared on (:meth:`ModelConfig.architecture_dict`, :data:`ARCHITECTURE_FIELDS`),
and the Hugging Face configs of an export and an import (:mod:`megatron_t2c.hf.architecture`, back through
:meth:`ModelConfig.from_architecture`).  It imports no megatron-core at module level, so converters and
command lines read it without paying for that import.

Presets (paper Table 5): ``pangu-100m`` (12 layers, hidden 768, 12 heads), ``pangu-350m`` (24, 1024, 16),
``pycodegpt-100m`` (12, 768, 12); PanGu-Coder's ``pangu-2.6b`` (32, 2560, 32); context 1024; GELU MLP of 4x
hidden; learned absolute positions (or RoPE); input and output embeddings tied.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from megatron_t2c.mrpt.separation import MODES as SEPARATION_MODES
from megatron_t2c.utils.dataclass_flags import option

__all__ = ["Preset", "PRESETS", "POSITION_EMBEDDINGS", "SEPARATION_MODES", "BACKENDS", "ARCHITECTURE_FIELDS",
           "ModelConfig", "resolve_backend", "te_available"]

POSITION_EMBEDDINGS = ("learned_absolute", "rope")
#: Backend names accepted by :func:`megatron_t2c.models.attention.layer_spec` (``auto`` = ``sdpa``):
#:
#: ``sdpa``
#:     ``torch.nn.functional.scaled_dot_product_attention`` with a dense boolean mask (torch picks a kernel
#:     that takes one; without a mask it runs causal-only).  Works everywhere; the tests' backend.
#: ``flex``
#:     FlexAttention with a ``BlockMask``: fully masked blocks are skipped, fully visible ones need no mask.
#:     The block mask is built once per batch (:meth:`AttentionMask.prepare`) and shared by every layer.  No
#:     attention dropout.  On CUDA the kernel is compiled with ``torch.compile``; on the CPU (torch 2.13) it
#:     runs eagerly and only forward.  Not measured on a GPU in this repository's tests.
#: ``te``
#:     Transformer Engine's ``TEDotProductAttention`` with an arbitrary mask, when Transformer Engine is
#:     installed (detected, never required).
#: ``unfused``
#:     megatron's own ``DotProductAttention`` (the reference).
BACKENDS = ("sdpa", "flex", "te", "unfused", "auto")
#: The resolved architecture fields a checkpoint and the model that loads it must agree on.
ARCHITECTURE_FIELDS = ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size",
                       "position_embedding_type", "make_vocab_size_divisible_by", "seq_length")


@dataclasses.dataclass(frozen=True)
class Preset:
    """An architecture from the paper's Table 5."""

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    seq_length: int = 1024


PRESETS: dict[str, Preset] = {
    "pangu-100m": Preset(12, 768, 12),
    "pangu-350m": Preset(24, 1024, 16),
    "pycodegpt-100m": Preset(12, 768, 12),
    # PanGu-Coder 2.6B (Christopoulou et al. 2022, arXiv 2207.11280): the PanGu-alpha 2.6B shape -- 32 layers,
    # hidden 2560, 32 heads, context 1024 (PanGu-alpha's last layer is its "query layer"; here an ordinary one)
    "pangu-2.6b": Preset(32, 2560, 32),
}


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


@dataclasses.dataclass
class ModelConfig:
    """Model architecture: a preset from the paper plus overrides."""

    preset: str = option("pangu-100m", "architecture preset (paper Table 5)", choices=tuple(PRESETS),
                         aliases=("--model",))
    num_layers: Optional[int] = option(None, "transformer layers (default: the preset's)")
    hidden_size: Optional[int] = option(None, "hidden size (default: the preset's)")
    num_attention_heads: Optional[int] = option(None, "attention heads (default: the preset's)")
    ffn_hidden_size: Optional[int] = option(None, "MLP hidden size (default: 4 x hidden size)")
    seq_length: Optional[int] = option(None, "context length in tokens (default: the preset's, 1024)")
    position_embedding_type: str = option("learned_absolute", "position embedding",
                                          choices=POSITION_EMBEDDINGS)
    rotary_base: int = option(10000, "RoPE base period (with --position-embedding-type rope)")
    attention_backend: str = option("sdpa", "core attention kernel (see megatron_t2c.models.attention)",
                                    choices=BACKENDS)
    separation: str = option("none", "which tokens get a code-space embedding row: none, partial (PES: "
                             "Python grammar tokens), full (FES: every non-special token), auto (the tokens "
                             "used most differently in docstrings and code; see megatron_t2c.mrpt.separation)",
                             choices=SEPARATION_MODES)
    separation_k: int = option(1000, "with --separation auto: how many tokens get a code row (counted on the "
                               "training data)")
    hidden_dropout: float = option(0.1, "dropout after attention and MLP")
    attention_dropout: float = option(0.1, "dropout on attention probabilities (0 for flex)")
    init_method_std: float = option(0.02, "standard deviation of the weight initialisation")
    layernorm_epsilon: float = option(1e-5, "LayerNorm epsilon", flag="--norm-epsilon",
                                      aliases=("--layernorm-epsilon",))
    make_vocab_size_divisible_by: int = option(128, "pad the vocabulary (and code rows) to a multiple "
                                               "of this times the tensor-parallel size")
    chunked_head: bool = option(False, "compute the tied output layer and its cross-entropy a chunk of rows at "
                                "a time, never holding the logits whole (megatron_t2c.models.tied_output; "
                                "tensor-parallel size 1)")

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if self.position_embedding_type not in POSITION_EMBEDDINGS:
            raise ValueError(f"position_embedding_type must be one of {POSITION_EMBEDDINGS}")
        if self.separation not in SEPARATION_MODES:
            raise ValueError(f"separation must be one of {SEPARATION_MODES}")
        if resolve_backend(self.attention_backend) == "flex" and self.attention_dropout > 0:
            raise ValueError("the flex attention backend has no attention dropout: set attention_dropout=0")

    def architecture(self) -> Preset:
        """The preset with this config's overrides applied."""
        preset = PRESETS[self.preset]
        overrides = {f.name: getattr(self, f.name) for f in dataclasses.fields(Preset)
                     if getattr(self, f.name) is not None}
        return dataclasses.replace(preset, **overrides)

    def architecture_dict(self) -> dict:
        """The resolved architecture (every field of :data:`ARCHITECTURE_FIELDS`): what a checkpoint records
        in its run info and what loading one compares."""
        arch = dataclasses.asdict(self.architecture())
        arch.update(ffn_hidden_size=self.ffn_hidden_size or 4 * arch["hidden_size"],
                    position_embedding_type=self.position_embedding_type,
                    make_vocab_size_divisible_by=self.make_vocab_size_divisible_by)
        return arch

    @classmethod
    def from_architecture(cls, arch: Mapping[str, Any], **settings: Any) -> "ModelConfig":
        """The config of a resolved architecture (:meth:`architecture_dict`'s fields, every number explicit)
        plus further ``settings``.  Without a known ``preset`` in ``settings`` it is the first preset of the
        same shape (layers, hidden size, heads, context), else ``pangu-100m``; the numbers win either way."""
        shape = tuple(arch[k] for k in ("num_layers", "hidden_size", "num_attention_heads", "seq_length"))
        if settings.get("preset") not in PRESETS:
            settings["preset"] = next((name for name, p in PRESETS.items()
                                       if (p.num_layers, p.hidden_size, p.num_attention_heads, p.seq_length) == shape),
                                      "pangu-100m")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in settings.items() if k in known}
        values.update({k: arch[k] for k in ARCHITECTURE_FIELDS if k in arch})
        return cls(**values)

    def transformer_config(self, **overrides: Any):
        """megatron's ``TransformerConfig`` for this architecture on the current parallel state.

        ``overrides`` are further ``TransformerConfig`` fields (precision, recompute, fusions...).
        """
        import torch
        from megatron.core import parallel_state
        from megatron.core.transformer.transformer_config import TransformerConfig

        arch = self.architecture()
        values: dict[str, Any] = dict(
            num_layers=arch.num_layers, hidden_size=arch.hidden_size,
            num_attention_heads=arch.num_attention_heads, ffn_hidden_size=self.ffn_hidden_size,
            hidden_dropout=self.hidden_dropout, attention_dropout=self.attention_dropout,
            init_method_std=self.init_method_std, layernorm_epsilon=self.layernorm_epsilon,
            tensor_model_parallel_size=parallel_state.get_tensor_model_parallel_world_size(),
            pipeline_model_parallel_size=parallel_state.get_pipeline_model_parallel_world_size(),
            # megatron-core 0.16.1's own default ("full") warns that it is deprecated; [] means the same
            cuda_graph_scope=[],
        )
        values.update(overrides)
        if values["pipeline_model_parallel_size"] > 1 and "pipeline_dtype" not in values:
            values["pipeline_dtype"] = torch.bfloat16 if values.get("bf16") else (
                torch.float16 if values.get("fp16") else torch.float32)
        return TransformerConfig(**values)
