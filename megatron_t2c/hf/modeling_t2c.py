"""The text-to-code GPT as a Hugging Face causal LM that knows modality (remote code of exported directories).

The model computes what megatron_t2c computes, from ``input_ids`` alone, with the training rules themselves:
``modality.py`` and ``objectives.py`` are megatron_t2c's own modules, shipped verbatim beside this file in an
exported directory (imported here as ``.modality``/``.objectives``; inside the megatron_t2c package they are
the package's modules).

* **Input rows**: a token whose modality (:func:`modality.modality_ids`) is code and that has a code row
  (``config.separated_ids``) is embedded with its code row (``transformer.wte_code``); every other token with
  its base row (``transformer.wte``).
* **Output space**: a position whose context is code (:func:`modality.segment_ids` after reading its token:
  what the next token will be) scores the vocabulary with the code-space rows (separated tokens: their code
  row, the others: their shared row); other positions with the base rows.  Logits are over the tokenizer's
  vocabulary (no padding).
* **Attention**: causal; a ``prefix_lm`` (prefix-code) model also lets the tokens of a document's prefix
  (:func:`objectives.prefix_mask`: ``[descr] docstring [python]``) see each other both ways, as in training.
  Local layers (``config.window_size``, GPT-Neo's) also keep only keys at most ``window_size`` positions back.
  Left padding (a 2-D ``attention_mask``) is honoured: padding is never attended to, positions count from a
  row's first real token.
* **generate()**: with the KV cache only the new tokens reach ``forward``; modality depends on the markers
  seen before, so :meth:`T2CForCausalLM.prepare_inputs_for_generation` recomputes it from the full
  ``input_ids`` that ``generate`` holds (vectorised, no Python loop over tokens) and passes it on.
  Calling ``forward`` by hand with a cache: pass ``modality``, ``label_modality`` (and ``prefix``) too.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_t2c import T2CConfig
from .modality import CODE, modality_ids, segment_ids
from .objectives import document_ids, prefix_mask


# the outputs' cache field: ``cache`` from transformers 5.24, ``past_key_values`` before (5.17 on GPU machines)
_OUTPUT_CACHE = "cache" if "cache" in getattr(CausalLMOutputWithPast, "__dataclass_fields__", {}) else "past_key_values"

__all__ = ["T2CPreTrainedModel", "T2CModel", "T2CForCausalLM", "modality_inputs"]


def modality_inputs(input_ids: torch.Tensor, config: T2CConfig, new_tokens: Optional[int] = None) -> dict:
    """What ``forward`` needs to know about modality, from the *full* ``[b, s]`` token ids.

    ``modality`` and ``label_modality`` for the last ``new_tokens`` positions (all by default); ``prefix``
    (prefix-LM models only) and ``document`` for every position: the keys of the attention.
    """
    new_tokens = input_ids.shape[-1] if new_tokens is None else new_tokens
    out = {"modality": modality_ids(input_ids, config.sample_format)[..., -new_tokens:],
           "label_modality": segment_ids(input_ids, config.sample_format)[..., -new_tokens:]}
    if config.prefix_lm:
        out["prefix"] = prefix_mask(input_ids, config.sample_format)
        out["document"] = document_ids(input_ids, config.eos_token_id)
    return out


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation (Hugging Face's ``gelu_new``; megatron_t2c's ``gelu_tanh``)."""
    return F.gelu(x, approximate="tanh")


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


#: ``config.activation_function`` -> the MLP's activation (the functions megatron_t2c trains with).
ACTIVATIONS = {"gelu": F.gelu, "gelu_new": gelu_tanh, "relu": F.relu, "silu": F.silu, "quick_gelu": quick_gelu}


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class T2CAttention(nn.Module):
    """Self-attention: fused ``[q; k; v]`` projection (without bias when ``config.qkv_bias`` is False), optional
    RoPE, SDPA with a boolean mask, scores scaled by ``config.attention_scale`` (default ``1/sqrt(head_dim)``)."""

    def __init__(self, config: T2CConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.qkv_proj = nn.Linear(config.hidden_size, (self.num_heads + 2 * self.num_kv_heads) * self.head_dim,
                                  bias=config.qkv_bias)
        self.scale = config.attention_scale if config.attention_scale is not None else 1.0 / math.sqrt(self.head_dim)
        self.out_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size)
        self.dropout = config.attention_dropout

    def forward(self, hidden: torch.Tensor, allowed: Optional[torch.Tensor], rope, cache: Optional[Cache]):
        b, s, _ = hidden.shape
        d = self.head_dim
        q, k, v = self.qkv_proj(hidden).split([self.num_heads * d, self.num_kv_heads * d, self.num_kv_heads * d], -1)
        q = q.view(b, s, self.num_heads, d).transpose(1, 2)
        k = k.view(b, s, self.num_kv_heads, d).transpose(1, 2)
        v = v.view(b, s, self.num_kv_heads, d).transpose(1, 2)
        if rope is not None:
            cos, sin = rope
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0,
            is_causal=allowed is None and s > 1, scale=self.scale,
            enable_gqa=self.num_heads != self.num_kv_heads)
        return self.out_proj(out.transpose(1, 2).reshape(b, s, self.num_heads * d))


class T2CBlock(nn.Module):
    """Pre-LayerNorm transformer layer (megatron's local GPT layer): x + attn(ln_1 x); x + mlp(ln_2 x)."""

    def __init__(self, config: T2CConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.attn = T2CAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = nn.ModuleDict({"fc_in": nn.Linear(config.hidden_size, config.intermediate_size),
                                  "fc_out": nn.Linear(config.intermediate_size, config.hidden_size)})
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.activation = ACTIVATIONS[config.activation_function]
        #: whether this layer attends within the sliding window (``config.window_size``)
        self.local = config.is_local_layer(layer_idx)

    def forward(self, hidden, allowed, rope, cache):
        hidden = hidden + self.dropout(self.attn(self.ln_1(hidden), allowed, rope, cache))
        mlp = self.mlp["fc_out"](self.activation(self.mlp["fc_in"](self.ln_2(hidden))))
        return hidden + self.dropout(mlp)


class T2CPreTrainedModel(PreTrainedModel):
    config_class = T2CConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["T2CBlock"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, std)
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()


class T2CModel(T2CPreTrainedModel):
    """Embeddings (base and code rows, positions), the layers and the final LayerNorm."""

    def __init__(self, config: T2CConfig):
        super().__init__(config)
        separated = config.separated_ids
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.wte_code = nn.Embedding(len(separated), config.hidden_size) if separated else None
        self.wpe = (nn.Embedding(config.max_position_embeddings, config.hidden_size)
                    if config.position_embedding_type == "learned_absolute" else None)
        self.drop = nn.Dropout(config.hidden_dropout)
        self.h = nn.ModuleList(T2CBlock(config, i) for i in range(config.num_hidden_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        # lookups derived from the config, built per device on first use (not buffers: nothing to save or
        # initialise, and unaffected by the meta device that from_pretrained builds the model on)
        self._lookups: dict = {}
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, value):
        self.wte = value

    def separated_ids(self, device) -> torch.Tensor:
        """``[K]`` the separated base ids (the order of ``wte_code``'s rows)."""
        return self._lookup("separated", device)

    def _lookup(self, name: str, device) -> torch.Tensor:
        key = (name, torch.device(device))
        if key not in self._lookups:
            separated = torch.tensor(self.config.separated_ids, dtype=torch.long, device=device)
            if name == "separated":
                value = separated
            elif name == "code_slot":  # [V]: a token's code row, -1 when it has none
                value = torch.full((self.config.vocab_size,), -1, dtype=torch.long, device=device)
                value[separated] = torch.arange(len(separated), device=device)
            else:  # inverse RoPE frequencies, float32 as in megatron
                d = self.config.head_dim
                exponents = torch.arange(0, d, 2, dtype=torch.float32, device=device) / d
                value = 1.0 / (self.config.rope_theta ** exponents)
            self._lookups[key] = value
        return self._lookups[key]

    def embed(self, input_ids: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        """Base rows, and code rows for code-modality tokens that have one."""
        hidden = self.wte(input_ids)
        if self.wte_code is not None:
            slot = self._lookup("code_slot", input_ids.device)[input_ids]
            use_code = (modality == CODE) & (slot >= 0)
            hidden = torch.where(use_code[..., None], self.wte_code(slot.clamp(min=0)), hidden)
        return hidden

    def _rope(self, position_ids: torch.Tensor, dtype: torch.dtype):
        freqs = position_ids[:, None, :, None].float() * self._lookup("rope", position_ids.device)
        angles = torch.cat((freqs, freqs), dim=-1)  # [b, 1, s, d]
        return angles.cos().to(dtype), angles.sin().to(dtype)

    @staticmethod
    def attention_allowed(q_len: int, k_len: int, attention_mask: Optional[torch.Tensor],
                          prefix: Optional[torch.Tensor], document: Optional[torch.Tensor], batch: int,
                          device) -> Optional[torch.Tensor]:
        """Boolean ``[b, 1, q, k]`` (True = may attend), or None for plain causal attention.

        Causal (the queries are the last ``q_len`` of ``k_len`` positions); prefix tokens of the same
        document see each other both ways; padding keys (``attention_mask == 0``) are never seen, except
        that every query sees itself (a padding row would otherwise attend to nothing and give NaN).
        """
        padded = attention_mask is not None and not bool(attention_mask.all())
        if prefix is None and not padded and q_len == k_len:
            return None
        k_pos = torch.arange(k_len, device=device)
        q_pos = k_pos[k_len - q_len:]
        allowed = (k_pos[None, :] <= q_pos[:, None]).expand(batch, 1, q_len, k_len)
        if prefix is not None:
            both = prefix[:, k_len - q_len:, None] & prefix[:, None, :]
            both &= document[:, k_len - q_len:, None] == document[:, None, :]
            allowed = allowed | both[:, None]
        if padded:
            allowed = allowed & attention_mask[:, None, None, :].bool()
            allowed = allowed | (k_pos[None, :] == q_pos[:, None])
        return allowed

    @staticmethod
    def windowed(allowed: Optional[torch.Tensor], window: int, q_len: int, k_len: int, device) -> torch.Tensor:
        """``allowed`` (None = causal) restricted to keys at most ``window`` positions before the query (the
        queries are the last ``q_len`` of ``k_len`` positions, as under a KV cache): a local layer's mask."""
        k_pos = torch.arange(k_len, device=device)
        q_pos = k_pos[k_len - q_len:]
        band = (q_pos[:, None] - k_pos[None, :]) <= window
        if allowed is None:
            allowed = k_pos[None, :] <= q_pos[:, None]
        return allowed & band

    def forward(self, input_ids: torch.LongTensor, modality: torch.Tensor, attention_mask=None, position_ids=None,
                cache: Optional[Cache] = None, prefix=None, document=None) -> tuple[torch.Tensor, Optional[Cache]]:
        b, s = input_ids.shape
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            if attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -s:]
            else:
                position_ids = torch.arange(past, past + s, device=input_ids.device)[None].expand(b, s)
        hidden = self.embed(input_ids, modality)
        rope = None
        if self.wpe is not None:
            hidden = hidden + self.wpe(position_ids)
        else:
            rope = self._rope(position_ids, hidden.dtype)
        hidden = self.drop(hidden)
        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError("T2C models take a 2-D attention_mask [batch, keys] (1 = token, 0 = padding)")
        allowed = self.attention_allowed(s, past + s, attention_mask, prefix, document, b, input_ids.device)
        local = None
        if self.config.window_size is not None and any(block.local for block in self.h):
            local = self.windowed(allowed, self.config.window_size, s, past + s, input_ids.device)
        for block in self.h:
            hidden = block(hidden, local if block.local else allowed, rope, cache)
        return self.ln_f(hidden), cache


class T2CForCausalLM(T2CPreTrainedModel, GenerationMixin):
    """:class:`T2CModel` with the tied, modality-relative output layer (see the module docstring)."""

    def __init__(self, config: T2CConfig):
        super().__init__(config)
        self.transformer = T2CModel(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.transformer.wte

    def set_input_embeddings(self, value):
        self.transformer.wte = value

    def get_output_embeddings(self):
        return None  # the output layer is the (modality-relative) input embedding itself

    def output_logits(self, hidden: torch.Tensor, label_modality: torch.Tensor) -> torch.Tensor:
        """``[b, s, V]``: base-row scores, code-space scores where ``label_modality`` is code."""
        transformer = self.transformer
        logits = F.linear(hidden, transformer.wte.weight)
        if transformer.wte_code is None:
            return logits
        is_code = label_modality == CODE
        if not bool(is_code.any()):
            return logits
        separated = transformer.separated_ids(hidden.device)
        code = logits.index_copy(-1, separated, F.linear(hidden, transformer.wte_code.weight))
        return torch.where(is_code[..., None], code, logits)

    def forward(self, input_ids: Optional[torch.LongTensor] = None, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.LongTensor] = None, cache: Optional[Cache] = None,
                labels: Optional[torch.LongTensor] = None, use_cache: Optional[bool] = None,
                modality: Optional[torch.Tensor] = None, label_modality: Optional[torch.Tensor] = None,
                prefix: Optional[torch.Tensor] = None, document: Optional[torch.Tensor] = None,
                logits_to_keep: int = 0, return_dict: Optional[bool] = None, past_key_values=None,
                inputs_embeds=None, **kwargs) -> CausalLMOutputWithPast:
        """Logits (and the loss with ``labels``, shifted inside as usual in Hugging Face).

        ``modality``/``label_modality`` (``[b, s]``) and ``prefix``/``document`` (``[b, past + s]``) are
        computed from ``input_ids`` when not given, which is right when ``input_ids`` is the whole
        sequence (no cache); ``generate`` passes them (see the module docstring).
        """
        if inputs_embeds is not None:
            raise ValueError("T2C models compute modality from input_ids: pass input_ids, not inputs_embeds")
        cache = cache if cache is not None else past_key_values
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past = cache.get_seq_length() if cache is not None else 0
        if modality is None or label_modality is None or (self.config.prefix_lm and prefix is None):
            if past:
                raise ValueError("with a non-empty cache, pass modality, label_modality (and prefix, document) "
                                 "computed from the full sequence (modality_inputs), as generate() does")
            computed = modality_inputs(input_ids, self.config)
            modality = computed["modality"] if modality is None else modality
            label_modality = computed["label_modality"] if label_modality is None else label_modality
            prefix = computed.get("prefix") if prefix is None else prefix
            document = computed.get("document") if document is None else document
        hidden, cache = self.transformer(input_ids, modality, attention_mask, position_ids, cache, prefix, document)
        if logits_to_keep:
            hidden, label_modality = hidden[:, -logits_to_keep:], label_modality[:, -logits_to_keep:]
        logits = self.output_logits(hidden, label_modality)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(logits.device),
                                   ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{_OUTPUT_CACHE: cache if use_cache else None})

    def prepare_inputs_for_generation(self, input_ids, *args, **kwargs):
        """Hugging Face's inputs, plus the modality of the new tokens computed from the full ``input_ids``."""
        inputs = super().prepare_inputs_for_generation(input_ids, *args, **kwargs)
        inputs.update(modality_inputs(input_ids, self.config, inputs["input_ids"].shape[-1]))
        return inputs
