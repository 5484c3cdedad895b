"""GPT-2 / GPT-Neo layers in the one architecture description: activations, no qkv bias, unscaled scores and
local (sliding-window) layers, from the command line down to megatron's model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from megatron_t2c.models import activations as act
from megatron_t2c.models.attention import ColumnParallelLinearNoBias
from megatron_t2c.models.config import ACTIVATION_NAMES, ARCHITECTURE_FIELDS, PRESETS, ModelConfig
from megatron_t2c.utils.dataclass_flags import parse_config
from helpers.t2c_model_data import GPT_NEO, SEQ, load_canonical, canonical, make_batch, mean_loss, model_config, \
    model_inputs, tiny_model


# ----------------------------------------------------------------------------------------------------
# Activations
# ----------------------------------------------------------------------------------------------------

def test_each_activation_name_gives_its_function():
    from transformers.activations import ACT2FN

    assert tuple(act.ACTIVATIONS) == ACTIVATION_NAMES
    x = torch.linspace(-6, 6, 2001, dtype=torch.float64)
    want = {"gelu": 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
            "gelu_tanh": 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
            "relu": x.clamp(min=0), "silu": x * torch.sigmoid(x), "quick_gelu": x * torch.sigmoid(1.702 * x)}
    for name, fn in act.ACTIVATIONS.items():
        torch.testing.assert_close(fn(x), want[name], atol=1e-12, rtol=0)
    assert act.ACTIVATIONS["gelu"] is F.gelu  # megatron's default, unchanged
    x32 = x.float()
    for hf_name, ours in act.FROM_HF_ACTIVATION.items():  # Hugging Face's functions agree with ours
        torch.testing.assert_close(act.ACTIVATIONS[ours](x32), ACT2FN[hf_name](x32), atol=1e-6, rtol=0)
    assert all(act.FROM_HF_ACTIVATION[hf] == ours for ours, hf in act.TO_HF_ACTIVATION.items())
    import pickle

    assert pickle.loads(pickle.dumps(act.ACTIVATIONS["gelu_tanh"])) is act.gelu_tanh


# ----------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------

def test_pycodegpt_is_gpt_neo_and_the_flags_parse():
    neo = ModelConfig(preset="pycodegpt-100m").architecture_dict()
    assert set(ARCHITECTURE_FIELDS) <= set(neo)
    assert {k: neo[k] for k in GPT_NEO} == dict(GPT_NEO, window_size=255, window_attn_skip_freq=[0, 1] * 6)
    assert ModelConfig(preset="pycodegpt-100m", num_layers=3).architecture_dict()["window_attn_skip_freq"] == [0, 1, 0]
    old = ModelConfig().architecture_dict()  # the other presets keep today's layers
    assert {k: old[k] for k in GPT_NEO} == dict(activation="gelu", qkv_bias=True, softmax_scale=None,
                                                  window_size=None, window_attn_skip_freq=None)
    config = parse_config(ModelConfig, argv=["--num-layers", "4", "--activation", "gelu_tanh", "--no-qkv-bias",
                                             "--softmax-scale", "1.0", "--window-size", "7",
                                             "--window-attn-skip-freq", "0,1,0,1"])
    assert (config.activation, config.qkv_bias, config.softmax_scale, config.window_size,
            config.window_attn_skip_freq) == ("gelu_tanh", False, 1.0, 7, [0, 1, 0, 1])
    assert parse_config(ModelConfig, argv=["--window-attn-skip-freq", "2"]).window_attn_skip_freq == 2
    assert parse_config(ModelConfig, argv=["--preset", "pycodegpt-100m", "--qkv-bias"]).architecture().qkv_bias
    with pytest.raises(ValueError, match="2 entries for 3 layers"):
        ModelConfig(num_layers=3, window_size=4, window_attn_skip_freq=[0, 1])
    with pytest.raises(ValueError, match="list of 0 \\(global\\) / 1 \\(local\\)"):
        ModelConfig(num_layers=2, window_attn_skip_freq=[0, 2])
    with pytest.raises(ValueError, match="activation"):
        ModelConfig(activation="tanh")
    with pytest.raises(SystemExit):
        parse_config(ModelConfig, argv=["--window-attn-skip-freq", "0,x"])
    for name in PRESETS:  # a resolved architecture comes back as the same architecture
        arch = ModelConfig(preset=name).architecture_dict()
        assert ModelConfig.from_architecture(arch).architecture_dict() == arch
    assert ModelConfig.from_architecture(neo).preset == "pycodegpt-100m"
    # a None of the architecture is not replaced by a preset's value
    assert ModelConfig.from_architecture(old, preset="pycodegpt-100m").architecture_dict() == old


def test_transformer_config_carries_the_layers(dist):
    tc = model_config(**GPT_NEO).transformer_config()
    assert (tc.activation_func, tc.softmax_scale, tc.window_size, tc.window_attn_skip_freq) == \
        (act.gelu_tanh, 1.0, (7, 0), [0, 1])
    tc = model_config().transformer_config()
    assert (tc.activation_func, tc.softmax_scale, tc.window_size, tc.window_attn_skip_freq) == (F.gelu, None, None, None)


# ----------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------

def _qkv_bias_keys(keys) -> list[str]:
    return [k for k in keys if "linear_qkv" in k and k.endswith("bias")]


def test_gpt_neo_model_has_no_qkv_bias_and_trains(dist):
    model = tiny_model("partial", model_config(**GPT_NEO))
    for layer in model.decoder.layers:
        qkv = layer.self_attention.linear_qkv
        assert isinstance(qkv, ColumnParallelLinearNoBias) and qkv.bias is None
        assert layer.self_attention.linear_proj.bias is not None and layer.mlp.linear_fc1.bias is not None
        assert layer.mlp.config.activation_func is act.gelu_tanh
    assert [layer.self_attention.core_attention.window for layer in model.decoder.layers] == [None, 7]
    assert _qkv_bias_keys(dict(model.named_parameters())) == []
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = make_batch(5, "code")
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = mean_loss(model, batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert _qkv_bias_keys(model.state_dict()) == [] and _qkv_bias_keys(model.sharded_state_dict()) == []
    assert all(layer.self_attention.linear_qkv.bias is None for layer in model.decoder.layers)
    # the default layers keep their qkv bias
    assert _qkv_bias_keys(dict(tiny_model("partial").named_parameters()))


def test_local_layers_apply_the_window(dist):
    """Same weights, window_size 7 vs none: equal while every row fits the window, different beyond it."""
    neo = tiny_model("none", model_config(**GPT_NEO)).eval()
    dense = tiny_model("none", model_config(**dict(GPT_NEO, window_size=None, window_attn_skip_freq=None))).eval()
    load_canonical(dense, canonical(neo))

    def logits(model, seq):
        batch = make_batch(7, "code", seq=seq)
        inputs = dict(model_inputs(batch, model.layout), labels=None, loss_mask=None)
        with torch.no_grad():
            return model(**inputs)

    torch.testing.assert_close(logits(neo, 8), logits(dense, 8))
    long_neo, long_dense = logits(neo, SEQ), logits(dense, SEQ)
    assert not torch.allclose(long_neo, long_dense, atol=1e-4)
    # the positions that still see their whole document and context within the window agree
    torch.testing.assert_close(long_neo[:, :8], long_dense[:, :8])
