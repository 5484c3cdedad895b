"""The tensor names and layouts of megatron_t2c checkpoints and of Hugging Face GPT-2 / GPT-Neo / T2C models.

* the word-embedding table: base rows ``[:vocab_size]`` (vocabulary padding dropped), the code rows of the
  separated ids (``embedding.word_embeddings.code_rows``, already canonical: id order, TP-independent);
  input and output layers are tied, as in training;
* ``linear_qkv``: megatron interleaves per query group ``[q_g (heads/groups x d), k_g, v_g]``; Hugging Face
  holds ``[q; k; v]`` (all heads' queries, then keys, then values; GPT-Neo as three separate bias-free
  ``q_proj``/``k_proj``/``v_proj``);
* layer norms (stored by megatron as ``linear_qkv.layer_norm_*`` / ``linear_fc1.layer_norm_*``), the
  attention projection, ``linear_fc1``/``linear_fc2``, the final LayerNorm, learned positions.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class LayerTensor:
    module: str  # megatron module name (TP=1 model), below decoder.layers.{i}.
    stored: str  # dist-checkpoint key, below decoder.layers.
    gpt2: str  # below transformer.h.{i}.
    t2c: str
    neo: str = ""  # GPT-Neo (nn.Linear layout); the fused q/k/v weight is its q_proj, k_proj, v_proj
    qkv: bool = False

    @property
    def qkv_bias(self) -> bool:
        """The fused q/k/v bias (absent from models without q/k/v bias, e.g. GPT-Neo)."""
        return self.module == "self_attention.linear_qkv.bias"

    def hf_name(self, target: str) -> str:
        return {"gpt2": self.gpt2, "gpt_neo": self.neo, "t2c": self.t2c}[target]


#: Every tensor of a transformer layer, in export order.
LAYER = tuple(LayerTensor(*row) for row in (
    ("input_layernorm.weight", "self_attention.linear_qkv.layer_norm_weight", "ln_1.weight", "ln_1.weight",
     "ln_1.weight"),
    ("input_layernorm.bias", "self_attention.linear_qkv.layer_norm_bias", "ln_1.bias", "ln_1.bias", "ln_1.bias"),
    ("self_attention.linear_qkv.weight", "self_attention.linear_qkv.weight", "attn.c_attn.weight",
     "attn.qkv_proj.weight", "attn.attention.{}_proj.weight", True),
    ("self_attention.linear_qkv.bias", "self_attention.linear_qkv.bias", "attn.c_attn.bias", "attn.qkv_proj.bias",
     "", True),
    ("self_attention.linear_proj.weight", "self_attention.linear_proj.weight", "attn.c_proj.weight",
     "attn.out_proj.weight", "attn.attention.out_proj.weight"),
    ("self_attention.linear_proj.bias", "self_attention.linear_proj.bias", "attn.c_proj.bias", "attn.out_proj.bias",
     "attn.attention.out_proj.bias"),
    ("pre_mlp_layernorm.weight", "mlp.linear_fc1.layer_norm_weight", "ln_2.weight", "ln_2.weight", "ln_2.weight"),
    ("pre_mlp_layernorm.bias", "mlp.linear_fc1.layer_norm_bias", "ln_2.bias", "ln_2.bias", "ln_2.bias"),
    ("mlp.linear_fc1.weight", "mlp.linear_fc1.weight", "mlp.c_fc.weight", "mlp.fc_in.weight", "mlp.c_fc.weight"),
    ("mlp.linear_fc1.bias", "mlp.linear_fc1.bias", "mlp.c_fc.bias", "mlp.fc_in.bias", "mlp.c_fc.bias"),
    ("mlp.linear_fc2.weight", "mlp.linear_fc2.weight", "mlp.c_proj.weight", "mlp.fc_out.weight", "mlp.c_proj.weight"),
    ("mlp.linear_fc2.bias", "mlp.linear_fc2.bias", "mlp.c_proj.bias", "mlp.fc_out.bias", "mlp.c_proj.bias"),
))


def layer_rows(qkv_bias: bool) -> tuple[LayerTensor, ...]:
    """The tensors of a layer of a model with or without q/k/v bias."""
    return tuple(row for row in LAYER if qkv_bias or not row.qkv_bias)


#: Alternative stored names of the layer norms (a spec whose layer norms are modules of their own).
STORED_ALIASES = {"self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
                   "self_attention.linear_qkv.layer_norm_bias": "input_layernorm.bias",
                   "mlp.linear_fc1.layer_norm_weight": "pre_mlp_layernorm.weight",
                   "mlp.linear_fc1.layer_norm_bias": "pre_mlp_layernorm.bias"}
TABLE, CODE_ROWS = "embedding.word_embeddings.weight", "embedding.word_embeddings.code_rows"
POSITIONS = "embedding.position_embeddings.weight"
FINAL = (("decoder.final_layernorm.weight", "transformer.ln_f.weight"),
          ("decoder.final_layernorm.bias", "transformer.ln_f.bias"))
#: Dist-checkpoint keys of model tensors (the rest is optimizer state and metadata).
MODEL_PREFIXES = ("embedding.", "decoder.", "output_layer.")


def deinterleave_qkv(t: torch.Tensor, heads: int, groups: int, head_dim: int) -> torch.Tensor:
    """megatron's fused QKV rows ``[g0: q.. k v | g1: q.. k v | ...]`` -> ``[q (all heads); k; v]``."""
    rest = t.shape[1:]
    per_group = heads // groups * head_dim
    g = t.reshape(groups, per_group + 2 * head_dim, *rest)
    return torch.cat([g[:, :per_group].reshape(heads * head_dim, *rest),
                      g[:, per_group:per_group + head_dim].reshape(groups * head_dim, *rest),
                      g[:, per_group + head_dim:].reshape(groups * head_dim, *rest)])


def interleave_qkv(t: torch.Tensor, heads: int, groups: int, head_dim: int) -> torch.Tensor:
    """The inverse of :func:`deinterleave_qkv`."""
    rest = t.shape[1:]
    q, k, v = t.split([heads * head_dim, groups * head_dim, groups * head_dim])
    return torch.cat([q.reshape(groups, heads // groups * head_dim, *rest), k.reshape(groups, head_dim, *rest),
                      v.reshape(groups, head_dim, *rest)], dim=1).reshape(-1, *rest)

