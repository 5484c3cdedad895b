"""The shipped YAML recipes (examples/configs/): the paper's settings (§3.5) per preset, usable with --config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "examples" / "configs"
PAPER_PRESETS = ("pangu-100m", "pangu-350m", "pycodegpt-100m")


@pytest.fixture(scope="module")
def data():
    from helpers.modality_data import indexed_dataset
    from helpers.t2c_data import tiny_tokenizer

    return indexed_dataset("pangu"), str(tiny_tokenizer("bpe"))


def _parse(recipe: Path, *extra: str):
    from megatron_t2c.training.config import parse_run_config

    return parse_run_config(["--config", str(recipe), "--data-path", "D", "--tokenizer-model", "T.model", *extra])


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_recipes_hold_the_papers_settings(preset):
    fmt = "pycodegpt" if preset.startswith("pycodegpt") else "pangu"
    mapt = _parse(CONFIGS / f"mapt_{preset}.yaml")
    mrpt = _parse(CONFIGS / f"mrpt_{preset}.yaml")
    for run in (mapt, mrpt):
        t = run.training
        assert (run.model.preset, run.data.format, run.model.seq_length) == (preset, fmt, 1024)
        assert (t.global_batch_size, t.precision, t.lr_warmup_fraction, t.lr_decay_style) == (1024, "bf16", 0.01,
                                                                                              "cosine")
    assert (mapt.training.stage, mapt.training.train_iters, mapt.model.separation, mapt.training.objective) == (
        "mapt", 500_000, "none", "text-code")
    assert mapt.training.preset("mapt") == type(mapt.training.preset("mapt"))(1e-4, 5e-6, 3.0)
    # MRPT: 5 epochs for PyCodeGPT, 10 for PanGu-Coder; objective and separation are the user's choice
    assert (mrpt.training.stage, mrpt.training.epochs) == ("mrpt", 5 if fmt == "pycodegpt" else 10)
    assert mrpt.training.preset("mrpt") == type(mrpt.training.preset("mrpt"))(1e-5, 5e-6, 1.0)
    chosen = _parse(CONFIGS / f"mrpt_{preset}.yaml", "--objective", "prefix-code", "--separation", "full")
    assert (chosen.training.objective, chosen.model.separation) == ("prefix-code", "full")


def test_every_recipe_is_for_a_known_preset():
    from megatron_t2c.models.config import PRESETS

    names = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    assert names == sorted(f"{stage}_{preset}" for stage in ("mapt", "mrpt") for preset in PAPER_PRESETS)
    assert set(PAPER_PRESETS) <= set(PRESETS)


def test_a_recipe_trains(data, tmp_path):
    """The MAPT recipe as a user runs it, shrunk by command-line overrides to two CPU steps."""
    from megatron_t2c.training.config import parse_run_config
    from megatron_t2c.training.loop import pretrain

    prefix, tokenizer = data
    run = parse_run_config([
        "--config", str(CONFIGS / "mapt_pangu-100m.yaml"), "--data-path", prefix, "--tokenizer-model", tokenizer,
        "--cpu", "--precision", "fp32", "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
        "--seq-length", "128", "--global-batch-size", "4", "--micro-batch-size", "2", "--train-iters", "2",
        "--no-use-distributed-optimizer", "--eval-iters", "0", "--save", str(tmp_path / "ckpt"),
        "--log-jsonl", str(tmp_path / "log.jsonl"), "--data-cache-path", str(tmp_path / "cache")])
    result = pretrain(run)
    assert result["iteration"] == 2
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    assert (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
