"""check_compatible: a checkpoint's recorded architecture against the run's, including run infos written before
the GPT-2/GPT-Neo layer fields existed."""

from __future__ import annotations

import pytest

from megatron_t2c.models.config import ARCHITECTURE_DEFAULTS, ModelConfig
from megatron_t2c.training.checkpointing import CheckpointError, check_compatible

#: the run info "architecture" of a pangu-100m checkpoint saved before activation, qkv_bias, softmax_scale,
#: window_size and window_attn_skip_freq were recorded
OLD_ARCHITECTURE = {"num_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "ffn_hidden_size": 3072,
                    "position_embedding_type": "learned_absolute", "make_vocab_size_divisible_by": 128,
                    "seq_length": 1024}


def _check(architecture: dict, model: ModelConfig) -> None:
    info = {"architecture": architecture, "tokenizer": {"sha256": "0" * 64}, "vocab_size": 1000,
            "separated_ids": [], "separation": "none"}
    check_compatible(info, model=model.architecture_dict(), vocab_size=1000, tokenizer_sha256="0" * 64,
                     separated=[], where="the checkpoint")


def test_an_old_run_info_is_compatible_with_todays_default_layers():
    assert not set(ARCHITECTURE_DEFAULTS) & set(OLD_ARCHITECTURE)
    _check(OLD_ARCHITECTURE, ModelConfig())
    _check(ModelConfig().architecture_dict(), ModelConfig())
    old = ModelConfig.from_architecture(OLD_ARCHITECTURE, preset="pycodegpt-100m")  # e.g. HF export of it
    assert old.architecture_dict() == ModelConfig().architecture_dict()


def test_an_old_run_info_is_refused_by_gpt_neo_layers():
    with pytest.raises(CheckpointError) as err:
        _check(OLD_ARCHITECTURE, ModelConfig(preset="pycodegpt-100m"))
    message = str(err.value)
    for part in ("activation is gelu in the checkpoint, gelu_tanh here", "qkv_bias is True in the checkpoint, "
                 "False here", "window_size is None in the checkpoint, 255 here"):
        assert part in message
    with pytest.raises(CheckpointError, match="window_attn_skip_freq"):
        _check(ModelConfig(preset="pycodegpt-100m").architecture_dict(),
               ModelConfig(preset="pycodegpt-100m", window_attn_skip_freq=[1, 0] * 6))
    _check(ModelConfig(preset="pycodegpt-100m").architecture_dict(), ModelConfig(preset="pycodegpt-100m"))


def test_model_from_an_old_pycodegpt_checkpoint_has_its_old_layers(dist, monkeypatch):
    """An old pycodegpt-100m checkpoint was trained with exact GELU, a qkv bias and no local layers: the model
    built for it follows its recorded architecture, not the preset's GPT-Neo layers of today."""
    from megatron_t2c.training import checkpointing

    tiny = dict(num_layers=2, hidden_size=32, num_attention_heads=4, ffn_hidden_size=128, seq_length=64)
    info = {"architecture": dict(OLD_ARCHITECTURE, **tiny, make_vocab_size_divisible_by=64),
            "model_config": dict(ModelConfig(preset="pycodegpt-100m", **tiny).__dict__), "vocab_size": 300,
            "separated_ids": []}
    for name in ARCHITECTURE_DEFAULTS:
        del info["model_config"][name]
    monkeypatch.setattr(checkpointing, "read_run_info", lambda path: info)
    monkeypatch.setattr(checkpointing, "load_model_weights", lambda path, models: None)
    model, _ = checkpointing.model_from_checkpoint("unused")
    layer = model.decoder.layers[1]
    assert layer.self_attention.linear_qkv.bias is not None and layer.self_attention.core_attention.window is None
    assert model.config.softmax_scale is None and model.config.window_size is None
    info["architecture"] = ModelConfig(preset="pycodegpt-100m", **tiny).architecture_dict()
    layer = checkpointing.model_from_checkpoint("unused")[0].decoder.layers[1]
    assert layer.self_attention.linear_qkv.bias is None and layer.self_attention.core_attention.window == 255
