"""The one description of the model architecture: the paper's presets and :class:`ModelConfig`.

:class:`ModelConfig` (a preset plus overrides, exposed on the command line through
:func:`megatron_t2c.utils.dataclass_flags.option`) is what every other view of the architecture derives
from: megatron's ``TransformerConfig`` (:meth:`ModelConfig.transformer_config`), the architecture a
checkpoint records and is compared on (:meth:`ModelConfig.architecture_dict`, :data:`ARCHITECTURE_FIELDS`),
and the Hugging Face configs of an export and an import (:mod:`megatron_t2c.hf.architecture`, back through
:meth:`ModelConfig.from_architecture`).  It imports no megatron-core at module level, so converters and
command lines read it without paying for that import.

Presets (paper Table 5): ``pangu-100m`` (12 layers, hidden 768, 12 heads), ``pangu-350m`` (24, 1024, 16),
``pycodegpt-100m`` (12, 768, 12: GPT-Neo 125M's layers); PanGu-Coder's ``pangu-2.6b`` (32, 2560, 32); context
1024; MLP of 4x hidden; learned absolute positions (or RoPE); input and output embeddings tied.  GPT-2 and
GPT-Neo layers differ in ``activation``, ``qkv_bias``, ``softmax_scale`` and local (sliding-window) layers
(``window_size``, ``window_attn_skip_freq``); see docs/models.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from megatron_t2c.mrpt.separation import MODES as SEPARATION_MODES
from megatron_t2c.utils.dataclass_flags import option

__all__ = ["Preset", "PRESETS", "POSITION_EMBEDDINGS", "SEPARATION_MODES", "BACKENDS", "ARCHITECTURE_FIELDS",
           "ARCHITECTURE_DEFAULTS", "ACTIVATION_NAMES", "ModelConfig", "resolve_backend", "te_available",
           "parse_window_attn_skip_freq"]

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
#: The MLP activations (the functions: :data:`megatron_t2c.models.activations.ACTIVATIONS`).
ACTIVATION_NAMES = ("gelu", "gelu_tanh", "relu", "silu", "quick_gelu")
#: The resolved architecture fields a checkpoint and the model that loads it must agree on.
ARCHITECTURE_FIELDS = ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size",
                       "position_embedding_type", "make_vocab_size_divisible_by", "seq_length",
                       "activation", "qkv_bias", "softmax_scale", "window_size", "window_attn_skip_freq")
#: What a field that a recorded architecture lacks means: run infos written before these fields existed
#: describe the layers of that time (exact GELU, a qkv bias, 1/sqrt(head_dim), no local layers).
ARCHITECTURE_DEFAULTS: dict[str, Any] = {"activation": "gelu", "qkv_bias": True, "softmax_scale": None,
                                         "window_size": None, "window_attn_skip_freq": None}


#: The architecture fields whose ModelConfig override ``None`` means "the preset's" although ``None`` is also
#: a value (no scaling override, no local layers, every layer local).
_NONE_MEANS_PRESET = ("softmax_scale", "window_size", "window_attn_skip_freq")


def parse_window_attn_skip_freq(value: Any) -> Optional[int | list[int]]:
    """``--window-attn-skip-freq``: None, an int N (layers whose number is not a multiple of N are local) or a
    0/1 per layer (1 = local); accepts the command line's ``"2"`` and ``"0,1,0,1"``."""
    wrong = f"window_attn_skip_freq must be a positive int or a list of 0 (global) / 1 (local), not {value!r}"
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "none"):
            return None
        try:
            numbers = [int(p) for p in text.replace(" ", ",").split(",") if p]
        except ValueError:
            raise ValueError(wrong) from None
        return parse_window_attn_skip_freq(numbers if "," in text or len(numbers) != 1 else numbers[0])
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, (list, tuple)) and all(not isinstance(v, bool) and v in (0, 1) for v in value):
        return [int(v) for v in value]
    raise ValueError(wrong)


@dataclasses.dataclass(frozen=True)
class Preset:
    """An architecture from the paper's Table 5.

    ``activation`` (:data:`ACTIVATION_NAMES`); ``qkv_bias``: False = the fused qkv projection has no bias
    parameter; ``softmax_scale``: None = ``1/sqrt(head_dim)``; ``window_size``: local layers see keys at most
    this many positions back (None: no local layers); ``window_attn_skip_freq``: megatron's choice of local
    layers (None: all, int N: layer numbers not a multiple of N, list: 0/1 per layer, 1 = local).  A preset's
    list is a period, repeated over the layers (so ``--num-layers`` may change).
    """

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    seq_length: int = 1024
    activation: str = "gelu"
    qkv_bias: bool = True
    softmax_scale: Optional[float] = None
    window_size: Optional[int] = None
    window_attn_skip_freq: Optional[int | tuple[int, ...] | list[int]] = None


PRESETS: dict[str, Preset] = {
    "pangu-100m": Preset(12, 768, 12),
    "pangu-350m": Preset(24, 1024, 16),
    # PyCodeGPT is GPT-Neo 125M (EleutherAI's config): gelu_new, q/k/v without bias, unscaled scores, and
    # attention_types [["global", "local"], 6] with window 256 (a query and the 255 keys before it)
    "pycodegpt-100m": Preset(12, 768, 12, activation="gelu_tanh", qkv_bias=False, softmax_scale=1.0,
                             window_size=255, window_attn_skip_freq=(0, 1)),
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
    activation: Optional[str] = option(None, "MLP activation: gelu (exact), gelu_tanh (GPT-2/GPT-Neo's "
                                       "gelu_new), relu, silu, quick_gelu (default: the preset's)",
                                       choices=ACTIVATION_NAMES)
    qkv_bias: Optional[bool] = option(None, "whether the fused query/key/value projection has a bias "
                                      "(--no-qkv-bias: no such parameter, as GPT-Neo; default: the preset's)")
    softmax_scale: Optional[float] = option(None, "scale of the attention scores (default: the preset's; "
                                            "none = 1/sqrt(head dim); GPT-Neo: 1.0)")
    window_size: Optional[int] = option(None, "local attention layers see keys at most this many positions "
                                        "back (GPT-Neo's window 256 = 255; default: the preset's)")
    window_attn_skip_freq: Optional[Any] = option(None, "which layers are local with --window-size: N = "
                                                  "layers whose number is not a multiple of N, or 0/1 per "
                                                  "layer such as 0,1,0,1 (1 = local; default: the preset's, "
                                                  "none = every layer)", parse=parse_window_attn_skip_freq)
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
        self.window_attn_skip_freq = parse_window_attn_skip_freq(self.window_attn_skip_freq)
        arch = self.architecture()
        if arch.activation not in ACTIVATION_NAMES:
            raise ValueError(f"activation {arch.activation!r}: choose from {', '.join(ACTIVATION_NAMES)}")
        if arch.window_size is not None and arch.window_size < 0:
            raise ValueError(f"window_size must be >= 0 (keys before the query), not {arch.window_size}")
        skip = arch.window_attn_skip_freq
        if isinstance(skip, list) and len(skip) != arch.num_layers:
            raise ValueError(f"window_attn_skip_freq has {len(skip)} entries for {arch.num_layers} layers")

    def architecture(self) -> Preset:
        """The preset with this config's overrides applied."""
        preset = PRESETS[self.preset]
        overrides = {f.name: getattr(self, f.name) for f in dataclasses.fields(Preset)
                     if getattr(self, f.name) is not None}
        arch = dataclasses.replace(preset, **overrides)
        skip = arch.window_attn_skip_freq
        if isinstance(skip, tuple):  # the preset's period, over this config's layers
            arch = dataclasses.replace(arch, window_attn_skip_freq=[skip[i % len(skip)]
                                                                   for i in range(arch.num_layers)])
        return arch

    def architecture_dict(self) -> dict:
        """The resolved architecture (every field of :data:`ARCHITECTURE_FIELDS`): what a checkpoint records
        in its run info and what loading one compares."""
        arch = dataclasses.asdict(self.architecture())
        arch.update(ffn_hidden_size=self.ffn_hidden_size or 4 * arch["hidden_size"],
                    position_embedding_type=self.position_embedding_type,
                    make_vocab_size_divisible_by=self.make_vocab_size_divisible_by)
        if isinstance(arch["window_attn_skip_freq"], (list, tuple)):
            arch["window_attn_skip_freq"] = list(arch["window_attn_skip_freq"])
        return arch

    @classmethod
    def from_architecture(cls, arch: Mapping[str, Any], **settings: Any) -> "ModelConfig":
        """The config of a resolved architecture (:meth:`architecture_dict`'s fields, every number explicit)
        plus further ``settings``.  Without a known ``preset`` in ``settings`` it is the first preset of the
        same shape (layers, hidden size, heads, context), else ``pangu-100m``; the numbers win either way (a
        preset that would turn an architecture's None into its own value is passed over).  A field of
        :data:`ARCHITECTURE_DEFAULTS` that ``arch`` lacks (an older run info) takes that default."""
        arch = {**ARCHITECTURE_DEFAULTS, **arch}
        shape = tuple(arch[k] for k in ("num_layers", "hidden_size", "num_attention_heads", "seq_length"))

        def expresses(name: str) -> bool:  # an override of None means "the preset's": it must be None there
            return all(arch[k] is not None or getattr(PRESETS[name], k) is None for k in _NONE_MEANS_PRESET)

        if settings.get("preset") not in PRESETS or not expresses(settings["preset"]):
            same = [name for name, p in PRESETS.items() if expresses(name) and
                    (p.num_layers, p.hidden_size, p.num_attention_heads, p.seq_length) == shape]
            layers = [name for name in same  # the same layers too (pycodegpt-100m's GPT-Neo ones)
                      if all(cls(preset=name).architecture_dict()[k] == arch[k] for k in ARCHITECTURE_DEFAULTS)]
            settings["preset"] = (layers or same or ["pangu-100m"])[0]
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

        from megatron_t2c.models.activations import ACTIVATIONS

        arch = self.architecture()
        values: dict[str, Any] = dict(
            num_layers=arch.num_layers, hidden_size=arch.hidden_size,
            num_attention_heads=arch.num_attention_heads, ffn_hidden_size=self.ffn_hidden_size,
            hidden_dropout=self.hidden_dropout, attention_dropout=self.attention_dropout,
            init_method_std=self.init_method_std, layernorm_epsilon=self.layernorm_epsilon,
            activation_func=ACTIVATIONS[arch.activation], softmax_scale=arch.softmax_scale,
            window_size=None if arch.window_size is None else (arch.window_size, 0),
            window_attn_skip_freq=arch.window_attn_skip_freq,
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
