"""The architecture both sides of a conversion agree on and the Hugging Face config written for it.

:class:`HFArchitecture` holds the model's :class:`~megatron_t2c.models.config.ModelConfig` (the one
architecture description), read from a checkpoint's run info or built from a Hugging Face ``config.json``,
plus the facts a converted model needs besides it; :meth:`HFArchitecture.hf_config` writes its fields under
Hugging Face's names (stock ``GPT2Config`` or the shipped ``T2CConfig``, which cannot import megatron_t2c).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from megatron_t2c.hf.configuration_t2c import id_ranges
from megatron_t2c.models.config import ARCHITECTURE_FIELDS, ModelConfig
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

    @property
    def stock_gpt2(self) -> bool:
        """Whether stock ``GPT2LMHeadModel`` computes exactly this model."""
        return (not self.separated_ids and self.position_embedding_type == "learned_absolute"
                and not self.prefix_lm and self.num_query_groups == self.num_attention_heads)

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

    def hf_config(self, target: str, dtype: torch.dtype, info: Optional[dict] = None):
        """The ``GPT2Config`` or ``T2CConfig`` of this architecture."""
        common = dict(vocab_size=self.vocab_size, layer_norm_epsilon=self.layernorm_epsilon,
                      initializer_range=self.init_method_std, bos_token_id=None, eos_token_id=st.EOC_ID,
                      pad_token_id=st.PAD_ID, tie_word_embeddings=True, dtype=dtype,
                      t2c_export=self._export_note(info))
        if target == "gpt2":
            from transformers import GPT2Config

            return GPT2Config(n_positions=self.seq_length, n_embd=self.hidden_size, n_layer=self.num_layers,
                              n_head=self.num_attention_heads, n_inner=self.ffn_hidden_size,
                              activation_function="gelu", resid_pdrop=self.hidden_dropout,
                              embd_pdrop=self.hidden_dropout, attn_pdrop=self.attention_dropout,
                              architectures=["GPT2LMHeadModel"], **common)
        from megatron_t2c.hf.configuration_t2c import T2CConfig

        return T2CConfig(hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
                         num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_query_groups,
                         intermediate_size=self.ffn_hidden_size, max_position_embeddings=self.seq_length,
                         position_embedding_type=self.position_embedding_type, rope_theta=float(self.rotary_base),
                         hidden_dropout=self.hidden_dropout, attention_dropout=self.attention_dropout,
                         sample_format=self.sample_format, separation=self.separation,
                         separated_id_ranges=id_ranges(self.separated_ids), prefix_lm=self.prefix_lm,
                         objective=self.objective, architectures=["T2CForCausalLM"],
                         auto_map={"AutoConfig": "configuration_t2c.T2CConfig",
                                   "AutoModelForCausalLM": "modeling_t2c.T2CForCausalLM"}, **common)

    @classmethod
    def from_hf_config(cls, config: dict, *, sample_format: Optional[str] = None,
                       objective: Optional[str] = None) -> tuple["HFArchitecture", str]:
        """The architecture of a Hugging Face ``config.json`` (dict) and its target name (gpt2 / t2c)."""
        note = config.get("t2c_export") or {}
        model_type = config.get("model_type")
        fmt = sample_format or note.get("format") or config.get("sample_format") or "pangu"
        settings = dict(layernorm_epsilon=config.get("layer_norm_epsilon", 1e-5),
                        init_method_std=config.get("initializer_range", 0.02))
        divisible_by = note.get("make_vocab_size_divisible_by", 128)
        if model_type == "gpt2":
            problems = []
            if config.get("activation_function", "gelu_new") != "gelu":
                problems.append(f"activation_function {config.get('activation_function', 'gelu_new')!r} "
                                "(megatron_t2c models use the exact GELU, 'gelu')")
            for key, wanted in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                                ("add_cross_attention", False), ("tie_word_embeddings", True)):
                if config.get(key, wanted) != wanted:
                    problems.append(f"{key}={config.get(key)!r} (needs {wanted!r})")
            if problems:
                raise ConversionError("unsupported GPT-2 architecture: " + "; ".join(problems))
            hidden = config["n_embd"]
            model = ModelConfig.from_architecture(
                dict(num_layers=config["n_layer"], hidden_size=hidden, num_attention_heads=config["n_head"],
                     ffn_hidden_size=config.get("n_inner") or 4 * hidden, seq_length=config["n_positions"],
                     position_embedding_type="learned_absolute", make_vocab_size_divisible_by=divisible_by),
                hidden_dropout=config.get("resid_pdrop", 0.1), attention_dropout=config.get("attn_pdrop", 0.1),
                separation="none", **settings)
            return cls(model=model, vocab_size=config["vocab_size"], num_query_groups=config["n_head"],
                       sample_format=fmt, objective=objective or note.get("objective", "text-code")), "gpt2"
        if model_type == "t2c_gpt":
            ids = [i for start, end in config.get("separated_id_ranges") or [] for i in range(start, end)]
            model = ModelConfig.from_architecture(
                dict(num_layers=config["num_hidden_layers"], hidden_size=config["hidden_size"],
                     num_attention_heads=config["num_attention_heads"],
                     ffn_hidden_size=config.get("intermediate_size") or 4 * config["hidden_size"],
                     seq_length=config["max_position_embeddings"],
                     position_embedding_type=config.get("position_embedding_type", "learned_absolute"),
                     make_vocab_size_divisible_by=divisible_by),
                rotary_base=int(config.get("rope_theta", 10000.0)), hidden_dropout=config.get("hidden_dropout", 0.0),
                attention_dropout=config.get("attention_dropout", 0.0),
                separation=config.get("separation", "none") if ids else "none", **settings)
            return cls(model=model, vocab_size=config["vocab_size"],
                       num_query_groups=config.get("num_key_value_heads") or config["num_attention_heads"],
                       separated_ids=tuple(ids), sample_format=fmt,
                       objective=objective or config.get("objective", "text-code")), "t2c"
        raise ConversionError(f"unknown architecture: model_type {model_type!r} (supported: 'gpt2' -- "
                              "GPT2LMHeadModel --, and 't2c_gpt' -- directories exported by megatron_t2c)")


def check_tokenizer(path: str, vocab_size: int) -> None:
    """Raise :class:`ConversionError` unless ``path`` is a megatron_t2c SentencePiece model of ``vocab_size``."""
    from megatron_t2c.tokenizer.sentencepiece import T2CTokenizerCore  # checks the special ids; no megatron import

    try:
        tokenizer = T2CTokenizerCore(path)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConversionError(f"{path}: not a megatron_t2c SentencePiece model: {exc}") from exc
    if tokenizer.vocab_size != vocab_size:
        raise ConversionError(f"{path} has {tokenizer.vocab_size} pieces, the model's vocabulary is {vocab_size}")
