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
