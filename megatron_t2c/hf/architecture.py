"""The architecture both sides of a conversion agree on and the Hugging Face config written for it.

:class:`HFArchitecture` holds the model's :class:`~megatron_t2c.models.config.ModelConfig` (the one
architecture description), read from a checkpoint's run info or built from a Hugging Face ``config.json``
(``GPT2LMHeadModel`` with any activation, ``GPTNeoForCausalLM``, or an exported ``T2CForCausalLM``), plus
the facts a converted model needs besides it; :meth:`HFArchitecture.hf_config` writes its fields under
Hugging Face's names (stock ``GPT2Config``/``GPTNeoConfig`` or the shipped ``T2CConfig``).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from megatron_t2c.hf.configuration_t2c import id_ranges
from megatron_t2c.models.activations import FROM_HF_ACTIVATION, TO_HF_ACTIVATION
from megatron_t2c.models.config import ModelConfig
from megatron_t2c.mrpt import special_tokens as st


class ConversionError(ValueError):
    """A checkpoint or directory that cannot be converted (unknown architecture, missing files, ...)."""


def _resolved(name: str) -> property:
    return property(lambda self: self.model.architecture_dict()[name],
                    doc=f"``{name}`` of the resolved architecture (:meth:`ModelConfig.architecture_dict`).")


def _setting(name: str) -> property:
    return property(lambda self: getattr(self.model, name), doc=f"The model config's ``{name}``.")


#: The model settings besides the resolved architecture that a conversion carries over.
_CARRIED_SETTINGS = ("preset", "rotary_base", "layernorm_epsilon", "hidden_dropout", "attention_dropout",
                     "init_method_std")
#: Stock Hugging Face classes a model can export to, by ``model_type``.
STOCK_CLASSES = {"gpt2": "GPT2LMHeadModel", "gpt_neo": "GPTNeoForCausalLM"}


def _activation(config: dict, key: str, default: str) -> str:
    name = config.get(key, default)
    if name not in FROM_HF_ACTIVATION:
        raise ConversionError(f"unsupported activation {key}={name!r} (supported: "
                              f"{', '.join(sorted(FROM_HF_ACTIVATION))})")
    return FROM_HF_ACTIVATION[name]


def _neo_local_layers(config: dict) -> list[int]:
    """GPT-Neo's ``attention_types`` (``[[["global", "local"], 6]]``) as megatron's per-layer 0/1 list."""
    kinds = [kind for pattern, repeat in config.get("attention_types") or [] for _ in range(repeat)
             for kind in pattern]
    if len(kinds) != config["num_layers"] or set(kinds) - {"global", "local"}:
        raise ConversionError(f"unsupported GPT-Neo attention_types {config.get('attention_types')!r}: "
                              f"{config['num_layers']} layers of 'global'/'local' expected")
    return [int(kind == "local") for kind in kinds]


@dataclasses.dataclass
class HFArchitecture:
    """What both sides must agree on: the model's :class:`~megatron_t2c.models.config.ModelConfig` (the one
    architecture description, whose numbers are read through the properties below) plus what a converted
    model needs besides it; from a checkpoint's run info or a Hugging Face config."""

    model: ModelConfig
    vocab_size: int
    num_query_groups: Optional[int] = None  # key/value heads on the Hugging Face side; None: one per head
    separated_ids: tuple = ()
    sample_format: str = "pangu"
    objective: str = "text-code"

    def __post_init__(self):
        if self.num_query_groups is None:
            self.num_query_groups = self.num_attention_heads

    # read-only views of the model config: the resolved architecture, then further settings
    num_layers, hidden_size, num_attention_heads, ffn_hidden_size = map(
        _resolved, ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size"))
    position_embedding_type, make_vocab_size_divisible_by, seq_length = map(
        _resolved, ("position_embedding_type", "make_vocab_size_divisible_by", "seq_length"))
    activation, qkv_bias, softmax_scale, window_size, window_attn_skip_freq = map(
        _resolved, ("activation", "qkv_bias", "softmax_scale", "window_size", "window_attn_skip_freq"))
    rotary_base, layernorm_epsilon, hidden_dropout, attention_dropout, init_method_std, separation = map(
        _setting, ("rotary_base", "layernorm_epsilon", "hidden_dropout", "attention_dropout", "init_method_std",
                   "separation"))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def prefix_lm(self) -> bool:
        return self.objective == "prefix-code"

    def local_layers(self) -> list[int]:
        """Per layer, 1 where attention is the local sliding window (megatron's ``is_layer_window_attention``)."""
        if self.window_size is None:
            return [0] * self.num_layers
        freq = self.window_attn_skip_freq
        if freq is None:
            return [1] * self.num_layers
        if isinstance(freq, int):
            return [int((n + 1) % freq != 0) for n in range(self.num_layers)]
        return [int(bool(v)) for v in freq]

    @property
    def stock_target(self) -> Optional[str]:
        """The stock Hugging Face ``model_type`` that computes exactly this model (``gpt2``, ``gpt_neo``), or None.

        GPT-2: q/k/v biases, the 1/sqrt(d) attention scale, no local layers.  GPT-Neo: no q/k/v bias, no
        scaling of the scores (``softmax_scale`` 1), any mix of global and local layers.  Both: learned
        positions, no separation, no prefix-LM, one key/value head per head, an activation they know.
        """
        if (self.separated_ids or self.position_embedding_type != "learned_absolute" or self.prefix_lm
                or self.num_query_groups != self.num_attention_heads or self.activation not in TO_HF_ACTIVATION):
            return None
        if self.qkv_bias and self.softmax_scale is None and self.window_size is None:
            return "gpt2"
        if not self.qkv_bias and self.softmax_scale == 1.0:
            return "gpt_neo"
        return None

    @property
    def stock_gpt2(self) -> bool:
        """Whether stock ``GPT2LMHeadModel`` computes exactly this model."""
        return self.stock_target == "gpt2"

    @classmethod
    def from_run_info(cls, info: dict) -> "HFArchitecture":
        """The architecture a checkpoint recorded (its numbers: the run info's resolved ``architecture``)."""
        config = info["model_config"]
        model = ModelConfig.from_architecture(info["architecture"], separation=info["separation"],
                                              **{k: config[k] for k in _CARRIED_SETTINGS if k in config})
        return cls(model=model, vocab_size=info["vocab_size"], separated_ids=tuple(info["separated_ids"]),
                   sample_format=info["format"], objective=info["objective"])

    # -- Hugging Face configs ----------------------------------------------------------------------
    def _export_note(self, info: Optional[dict]) -> dict:
        note = {"format": self.sample_format, "objective": self.objective, "separation": self.separation,
                "make_vocab_size_divisible_by": self.make_vocab_size_divisible_by}
        if info:
            note.update(stage=info.get("stage"), iteration=info.get("iteration"),
                        tokenizer_sha256=(info.get("tokenizer") or {}).get("sha256"))
        return note

    def hf_config(self, target: str, dtype: torch.dtype, info: Optional[dict] = None, *,
                  vocab_size: Optional[int] = None, eos_token_id: int = st.EOC_ID, pad_token_id: int = st.PAD_ID):
        """The ``GPT2Config``, ``GPTNeoConfig`` or ``T2CConfig`` of this architecture.  ``vocab_size`` and the
        token ids default to megatron_t2c's id space (a stock export with a Hugging Face tokenizer passes
        those of the tokenizer's own id space)."""
        common = dict(vocab_size=vocab_size or self.vocab_size, layer_norm_epsilon=self.layernorm_epsilon,
                      initializer_range=self.init_method_std, bos_token_id=None, eos_token_id=eos_token_id,
                      pad_token_id=pad_token_id, tie_word_embeddings=True, dtype=dtype,
                      t2c_export=self._export_note(info))
        activation = TO_HF_ACTIVATION[self.activation]
        if target == "gpt2":
            from transformers import GPT2Config

            return GPT2Config(n_positions=self.seq_length, n_embd=self.hidden_size, n_layer=self.num_layers,
                              n_head=self.num_attention_heads, n_inner=self.ffn_hidden_size,
                              activation_function=activation, resid_pdrop=self.hidden_dropout,
                              embd_pdrop=self.hidden_dropout, attn_pdrop=self.attention_dropout,
                              architectures=["GPT2LMHeadModel"], **common)
        if target == "gpt_neo":
            from transformers import GPTNeoConfig

            kinds = [["local" if local else "global"] for local in self.local_layers()]
            return GPTNeoConfig(max_position_embeddings=self.seq_length, hidden_size=self.hidden_size,
                                num_layers=self.num_layers, num_heads=self.num_attention_heads,
                                attention_types=[[kind, 1] for kind in kinds], intermediate_size=self.ffn_hidden_size,
                                window_size=(self.window_size or 0) + 1, activation_function=activation,
                                resid_dropout=self.hidden_dropout, embed_dropout=self.hidden_dropout,
                                attention_dropout=self.attention_dropout, architectures=["GPTNeoForCausalLM"],
                                **common)
        from megatron_t2c.hf.configuration_t2c import T2CConfig

        local = self.local_layers()
        return T2CConfig(hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
                         num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_query_groups,
                         intermediate_size=self.ffn_hidden_size, max_position_embeddings=self.seq_length,
                         position_embedding_type=self.position_embedding_type, rope_theta=float(self.rotary_base),
                         hidden_dropout=self.hidden_dropout, attention_dropout=self.attention_dropout,
                         activation_function=activation, qkv_bias=self.qkv_bias, attention_scale=self.softmax_scale,
                         window_size=self.window_size, window_layers=local if any(local) else None,
                         sample_format=self.sample_format, separation=self.separation,
                         separated_id_ranges=id_ranges(self.separated_ids), prefix_lm=self.prefix_lm,
                         objective=self.objective, architectures=["T2CForCausalLM"],
                         auto_map={"AutoConfig": "configuration_t2c.T2CConfig",
                                   "AutoModelForCausalLM": "modeling_t2c.T2CForCausalLM"}, **common)

    @classmethod
    def from_hf_config(cls, config: dict, *, sample_format: Optional[str] = None,
                       objective: Optional[str] = None) -> tuple["HFArchitecture", str]:
        """The architecture of a Hugging Face ``config.json`` (dict) and its target name (gpt2 / gpt_neo / t2c)."""
        note = config.get("t2c_export") or {}
        model_type = config.get("model_type")
        fmt = sample_format or note.get("format") or config.get("sample_format") or "pangu"
        objective = objective or note.get("objective") or config.get("objective") or "text-code"
        settings = dict(layernorm_epsilon=config.get("layer_norm_epsilon", 1e-5),
                        init_method_std=config.get("initializer_range", 0.02))
        divisible_by = note.get("make_vocab_size_divisible_by", 128)
        if model_type == "gpt2":
            problems = []
            for key, wanted in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                                ("reorder_and_upcast_attn", False), ("add_cross_attention", False),
                                ("tie_word_embeddings", True)):
                if config.get(key, wanted) != wanted:
                    problems.append(f"{key}={config.get(key)!r} (needs {wanted!r})")
            if problems:
                raise ConversionError("unsupported GPT-2 architecture: " + "; ".join(problems))
            hidden = config["n_embd"]
            model = ModelConfig.from_architecture(
                dict(num_layers=config["n_layer"], hidden_size=hidden, num_attention_heads=config["n_head"],
                     ffn_hidden_size=config.get("n_inner") or 4 * hidden, seq_length=config["n_positions"],
                     position_embedding_type="learned_absolute", make_vocab_size_divisible_by=divisible_by,
                     activation=_activation(config, "activation_function", "gelu_new"), qkv_bias=True,
                     softmax_scale=None, window_size=None, window_attn_skip_freq=None),
                hidden_dropout=config.get("resid_pdrop", 0.1), attention_dropout=config.get("attn_pdrop", 0.1),
                separation="none", **settings)
            return cls(model=model, vocab_size=config["vocab_size"], num_query_groups=config["n_head"],
                       sample_format=fmt, objective=objective), "gpt2"
        if model_type == "gpt_neo":
            if not config.get("tie_word_embeddings", True):
                raise ConversionError("unsupported GPT-Neo architecture: tie_word_embeddings=False (megatron_t2c "
                                      "ties the output layer to the input embedding)")
            hidden, local = config["hidden_size"], _neo_local_layers(config)
            model = ModelConfig.from_architecture(
                dict(num_layers=config["num_layers"], hidden_size=hidden, num_attention_heads=config["num_heads"],
                     ffn_hidden_size=config.get("intermediate_size") or 4 * hidden,
                     seq_length=config["max_position_embeddings"], position_embedding_type="learned_absolute",
                     make_vocab_size_divisible_by=divisible_by,
                     activation=_activation(config, "activation_function", "gelu_new"), qkv_bias=False,
                     softmax_scale=1.0, window_size=config.get("window_size", 256) - 1 if any(local) else None,
                     window_attn_skip_freq=local if any(local) else None),
                hidden_dropout=config.get("resid_dropout", 0.0), attention_dropout=config.get("attention_dropout", 0.0),
                separation="none", **settings)
            return cls(model=model, vocab_size=config["vocab_size"], num_query_groups=config["num_heads"],
                       sample_format=fmt, objective=objective), "gpt_neo"
        if model_type == "t2c_gpt":
            ids = [i for start, end in config.get("separated_id_ranges") or [] for i in range(start, end)]
            window_layers = config.get("window_layers")
            model = ModelConfig.from_architecture(
                dict(num_layers=config["num_hidden_layers"], hidden_size=config["hidden_size"],
                     num_attention_heads=config["num_attention_heads"],
                     ffn_hidden_size=config.get("intermediate_size") or 4 * config["hidden_size"],
                     seq_length=config["max_position_embeddings"],
                     position_embedding_type=config.get("position_embedding_type", "learned_absolute"),
                     make_vocab_size_divisible_by=divisible_by,
                     activation=_activation(config, "activation_function", "gelu"),
                     qkv_bias=config.get("qkv_bias", True), softmax_scale=config.get("attention_scale"),
                     window_size=config.get("window_size"),
                     window_attn_skip_freq=list(window_layers) if window_layers else None),
                rotary_base=int(config.get("rope_theta", 10000.0)), hidden_dropout=config.get("hidden_dropout", 0.0),
                attention_dropout=config.get("attention_dropout", 0.0),
                separation=config.get("separation", "none") if ids else "none", **settings)
            return cls(model=model, vocab_size=config["vocab_size"],
                       num_query_groups=config.get("num_key_value_heads") or config["num_attention_heads"],
                       separated_ids=tuple(ids), sample_format=fmt, objective=objective), "t2c"
        raise ConversionError(f"unknown architecture: model_type {model_type!r} (supported: 'gpt2' -- "
                              "GPT2LMHeadModel --, 'gpt_neo' -- GPTNeoForCausalLM --, and 't2c_gpt' -- "
                              "directories exported by megatron_t2c)")


def check_tokenizer(path: str, vocab_size: int):
    """The tokenizer at ``path`` (a megatron_t2c SentencePiece model or a Hugging Face tokenizer directory), after
    checking that it has ``vocab_size`` ids; :class:`ConversionError` otherwise."""
    from megatron_t2c.tokenizer.loading import open_tokenizer  # no megatron import

    try:
        tokenizer = open_tokenizer(path)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConversionError(f"{path}: not a tokenizer megatron_t2c reads: {exc}") from exc
    if tokenizer.vocab_size != vocab_size:
        raise ConversionError(f"{path} has {tokenizer.vocab_size} ids, the model's vocabulary is {vocab_size}")
    return tokenizer
