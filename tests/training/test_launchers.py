"""The torchrun launchers in examples/ run as documented, on their CPU path with a tiny override."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = ("--num-layers 2 --hidden-size 64 --num-attention-heads 4 --seq-length 128 --train-iters 2 "
        "--epochs 0 --global-batch-size 4 --micro-batch-size 2 --save-interval 0 --eval-iters 0")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """CPU=1, a DATA_DIR laid out as the quickstart writes it (real stdlib datasets), a tiny override."""
    from helpers.modality_data import indexed_dataset
    from helpers.t2c_data import tiny_tokenizer

    data = tmp_path_factory.mktemp("data")
    for fmt in ("pangu", "pycodegpt"):
        prefix = indexed_dataset(fmt)
        for include in ("all", "text_code"):
            for ext in (".bin", ".idx"):
                os.symlink(prefix + ext, data / f"{fmt}_{include}{ext}")
    os.symlink(tiny_tokenizer("bpe"), data / "tokenizer.model")
    runs = tmp_path_factory.mktemp("runs")
    return dict(os.environ, CPU="1", GPUS_PER_NODE="1", DATA_DIR=str(data), RUNS=str(runs), EXTRA_ARGS=TINY,
                PYTHON=str(REPO / ".venv" / "bin" / "python"), OMP_NUM_THREADS="1",
                MASTER_PORT=str(29500 + os.getpid() % 1000))


def _run(cmd: list[str], env: dict, **extra) -> str:
    proc = subprocess.run(cmd, cwd=REPO, env=dict(env, **extra), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def _steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if "loss" in r]


def test_mapt_then_mrpt_launchers(env):
    _run(["bash", "examples/mapt.sh", "pycodegpt-100m"], env, EXTRA_ARGS=TINY.replace("--epochs 0 ", ""))
    mapt = Path(env["RUNS"]) / "mapt_pycodegpt-100m"
    assert _steps(mapt) == [1, 2]
    assert (mapt / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    assert list((mapt / "tensorboard").iterdir())

    # MRPT runs are specified in epochs; a tiny fraction of one here.  PES with the release's own word list.
    release = REPO / "tests" / "mrpt" / "data" / "release_python_tokens.txt"
    tiny = TINY.replace("--train-iters 2 --epochs 0", "--epochs 0.01") + f" --separation-tokens {release}"
    out = _run(["bash", "examples/mrpt_grid.sh", "pycodegpt-100m"], env, EXTRA_ARGS=tiny, OBJECTIVES="code prefix-code",
               SEPARATIONS="partial")
    from megatron_t2c.mrpt.separation import read_token_list, separated_token_ids
    from helpers.modality_data import pieces

    for objective in ("code", "prefix-code"):
        run = Path(env["RUNS"]) / f"mrpt_pycodegpt-100m_{objective}_partial"
        assert _steps(run), objective
        info = json.loads(next((run / "checkpoints").glob("iter_*/t2c_run.json")).read_text())
        assert (info["stage"], info["objective"], info["separation"], info["format"]) == (
            "mrpt", objective, "partial", "pycodegpt")
        # the checkpoint records the word list and the ids it gave; the packing figures of the data
        words = read_token_list(release)
        assert info["separation_tokens"]["words"] == list(words)
        assert info["separated_ids"] == separated_token_ids("partial", pieces(), words=words)
        assert info["packing"]["rows"] > 0 and 0 < info["packing"]["padding_fraction"] < 1
    assert "initialised from" in out and "packing (whole documents, training split, one epoch)" in out


def test_slurm_example_runs_the_launcher(env):
    """Without SLURM (LAUNCH empty) the sbatch script runs its launcher directly; the directives are valid."""
    text = (REPO / "examples" / "slurm_mapt.sbatch").read_text()
    assert "#SBATCH --nodes=" in text and "--requeue" in text
    _run(["bash", "examples/slurm_mapt.sbatch"], env, LAUNCH="", MASTER_ADDR="127.0.0.1", ARGS="pangu-100m",
         EXTRA_ARGS=TINY.replace("--epochs 0 ", ""))
    assert _steps(Path(env["RUNS"]) / "mapt_pangu-100m") == [1, 2]


def _dry(script: list[str], env: dict, **extra) -> list[str]:
    out = _run(["bash", *script], env, DRY_RUN="1", EXTRA_ARGS="", **extra)
    return out.strip().splitlines()[-1].split()


def _flag(words: list[str], name: str) -> str:
    return words[len(words) - 1 - words[::-1].index(name) + 1]  # the last one wins, as argparse takes it


def test_launchers_default_to_the_paper_budgets(env):
    """Paper §3.5: batch 1,024 rows of 1,024 tokens, MAPT 500K steps, MRPT 10 epochs (PanGu-Coder) and 5
    (PyCodeGPT), warm-up 1%; environment variables override."""
    mapt = _dry(["examples/mapt.sh", "pangu-350m"], env)
    assert [_flag(mapt, f) for f in ("--train-iters", "--global-batch-size", "--seq-length", "--lr-warmup-fraction")] \
        == ["500000", "1024", "1024", "0.01"]
    for model, epochs in (("pangu-100m", "10"), ("pangu-350m", "10"), ("pycodegpt-100m", "5")):
        mrpt = _dry(["examples/mrpt.sh", "code", "partial", model], env)
        assert [_flag(mrpt, f) for f in ("--epochs", "--global-batch-size", "--seq-length")] == [epochs, "1024", "1024"]
    mrpt = _dry(["examples/mrpt.sh", "code", "partial"], env, EPOCHS="3", GLOBAL_BATCH="64")
    assert (_flag(mrpt, "--epochs"), _flag(mrpt, "--global-batch-size")) == ("3", "64")


def test_mrpt_from_hf_recipe(env, tmp_path):
    """examples/mrpt_from_hf.sh on a tiny random GPT-Neo with its own BPE: import (verified) -> data with that
    tokenizer -> MRPT without restating architecture or tokenizer -> HumanEval -> stock export (verified)."""
    import hf.test_public_backbones as backbones
    from helpers.hf_tokenizers import tiny_hf_tokenizer

    backbones.SEQ = 256  # room for whole stdlib functions
    hf_dir = backbones._backbone("gpt_neo", tmp_path / "neo", tiny_hf_tokenizer(800, "pycodegpt"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    import json as json_module
    import shlex
    import textwrap
    for module in (textwrap, shlex, json_module.decoder, json_module.encoder):
        (corpus / Path(module.__file__).name).write_text(Path(module.__file__).read_text())
    out = _run(["bash", "examples/mrpt_from_hf.sh", str(hf_dir), "code", "none"], env, EXTRA_ARGS="",
               RUN_DIR=str(tmp_path / "run"), CORPUS=str(corpus), TRAIN_ITERS="2", GLOBAL_BATCH="2",
               MICRO_BATCH="2", LIMIT="1", MAX_NEW_TOKENS="8", T2C_MBPP=str(tmp_path / "no-mbpp.jsonl"))
    run = tmp_path / "run"
    assert json.loads((run / "import_verify.json").read_text())["ok"]
    assert _steps(run) == [1, 2]
    assert json.loads((run / "eval" / "humaneval.summary.json").read_text())
    assert json.loads((run / "hf" / "config.json").read_text())["architectures"] == ["GPTNeoForCausalLM"]
    assert json.loads((run / "export_verify.json").read_text())["ok"]
    assert "== done" in out
