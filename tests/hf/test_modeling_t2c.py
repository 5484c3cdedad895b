"""The remote-code T2CForCausalLM with GPT-2 / GPT-Neo layers computes what transformers' own models compute
(logits and greedy generate() under the KV cache), and its defaults are the layers of earlier exports."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from megatron_t2c.hf.configuration_t2c import T2CConfig
from megatron_t2c.hf.modeling_t2c import T2CForCausalLM

VOCAB, HIDDEN, HEADS, LAYERS, POSITIONS = 100, 64, 4, 2, 64


def _t2c(**layers) -> T2CForCausalLM:
    config = T2CConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                       max_position_embeddings=POSITIONS, eos_token_id=None, pad_token_id=None, **layers)
    return T2CForCausalLM(config).eval()


def _load(model: T2CForCausalLM, state: dict) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)


def _gpt_neo_state(neo) -> dict:
    """GPT-Neo's tensors under T2C's names (q, k, v stacked in T2C's ``[q; k; v]`` order)."""
    out = {}
    for name, value in neo.state_dict().items():
        if name.startswith("lm_head") or ".attn.attention.bias" in name or "masked_bias" in name:
            continue
        name = name.replace("attn.attention.out_proj", "attn.out_proj").replace("mlp.c_fc", "mlp.fc_in") \
            .replace("mlp.c_proj", "mlp.fc_out")
        if ".attn.attention." in name:
            continue  # q/k/v below
        out[name] = value
    for i, block in enumerate(neo.transformer.h):
        att = block.attn.attention
        out[f"transformer.h.{i}.attn.qkv_proj.weight"] = torch.cat(
            [att.q_proj.weight, att.k_proj.weight, att.v_proj.weight])
    return out


def _gpt2_state(gpt2) -> dict:
    """GPT-2's tensors under T2C's names (its Conv1D weights are ``[in, out]``: transposed)."""
    out = {}
    for name, value in gpt2.state_dict().items():
        if name.startswith("lm_head") or name.endswith(".attn.bias") or name.endswith("masked_bias"):
            continue
        conv = any(part in name for part in ("c_attn.weight", "c_proj.weight", "c_fc.weight"))
        name = name.replace("attn.c_attn", "attn.qkv_proj").replace("attn.c_proj", "attn.out_proj") \
            .replace("mlp.c_fc", "mlp.fc_in").replace("mlp.c_proj", "mlp.fc_out")
        out[name] = value.t() if conv else value
    return out


def _assert_same_model(ours, theirs) -> None:
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(15, VOCAB, (3, 32), generator=gen)  # ids above the special markers
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens).logits, theirs(tokens).logits, atol=1e-4, rtol=1e-4)
        kwargs = dict(max_new_tokens=20, min_new_tokens=20, do_sample=False, pad_token_id=0)
        want = theirs.generate(tokens, **kwargs)
        got = ours.generate(tokens, **kwargs)
    assert want.shape == (3, 52)
    assert torch.equal(got, want)


def test_gpt_neo_layers_compute_transformers_gpt_neo():
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    torch.manual_seed(0)
    neo = GPTNeoForCausalLM(GPTNeoConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS, window_size=8,
        attention_types=[[["global", "local"], 1]], max_position_embeddings=POSITIONS, activation_function="gelu_new",
        resid_dropout=0.0, embed_dropout=0.0, attention_dropout=0.0, eos_token_id=None, bos_token_id=None)).eval()
    with torch.no_grad():  # biases away from zero, so that a missing one would show
        for name, p in neo.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
    ours = _t2c(activation_function="gelu_new", qkv_bias=False, attention_scale=1.0, window_size=7,
                window_layers=[0, 1])
    assert ours.transformer.h[0].attn.qkv_proj.bias is None
    assert [block.local for block in ours.transformer.h] == [False, True]
    _load(ours, _gpt_neo_state(neo))
    _assert_same_model(ours, neo)
    # the window matters on these lengths: without it the model computes something else
    dense = _t2c(activation_function="gelu_new", qkv_bias=False, attention_scale=1.0)
    _load(dense, _gpt_neo_state(neo))
    tokens = torch.randint(15, VOCAB, (1, 32))
    with torch.no_grad():
        assert not torch.allclose(dense(tokens).logits, ours(tokens).logits, atol=1e-3)
        torch.testing.assert_close(dense(tokens[:, :8]).logits, ours(tokens[:, :8]).logits)


def test_gpt2_with_gelu_new_computes_transformers_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    gpt2 = GPT2LMHeadModel(GPT2Config(
        vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=POSITIONS,
        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, eos_token_id=None,
        bos_token_id=None)).eval()
    ours = _t2c(activation_function="gelu_new")
    _load(ours, _gpt2_state(gpt2))
    _assert_same_model(ours, gpt2)


def test_defaults_are_the_layers_of_earlier_exports():
    """A config.json written before the layer fields existed: exact GELU, a qkv bias, 1/sqrt(head_dim), no window."""
    config = T2CConfig.from_dict(dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                      num_attention_heads=HEADS, max_position_embeddings=POSITIONS))
    assert (config.activation_function, config.qkv_bias, config.attention_scale, config.window_size,
            config.window_layers) == ("gelu", True, None, None, None)
    model = T2CForCausalLM(config).eval()
    block = model.transformer.h[0]
    assert block.attn.qkv_proj.bias is not None and block.activation is F.gelu and not block.local
    assert block.attn.scale == pytest.approx((HIDDEN // HEADS) ** -0.5)
    with pytest.raises(ValueError, match="window_layers"):
        T2CConfig(num_hidden_layers=2, window_size=4, window_layers=[1])
    with pytest.raises(ValueError, match="activation_function"):
        T2CConfig(activation_function="tanh")
    every = T2CConfig(num_hidden_layers=2, window_size=4)
    assert [every.is_local_layer(i) for i in range(2)] == [True, True]
