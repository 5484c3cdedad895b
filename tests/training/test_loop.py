"""pretrain_t2c.py on real data (stdlib functions, a tiny tokenizer): learning, exact resume, parallel
equivalence, MAPT -> MRPT, checkpoints and the errors a user meets.

Runs are tiny (2 layers, hidden 64, 128-token rows).  Multi-rank runs go through torchrun (2 CPU ranks);
their per-step losses come back through ``--log-jsonl``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.training_runs import stdlib_data, tiny_run

from helpers.torchrun import run_with_torchrun

REPO = Path(__file__).resolve().parents[2]
FMT = "pycodegpt"


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data():
    """(dataset prefix, tokenizer model) made by the real preprocessing from stdlib records."""
    return stdlib_data(FMT)


def argv(data, out: Path, **flags) -> list[str]:
    """pretrain_t2c.py flags for a tiny run writing its log to ``out/log.jsonl`` (``flags`` override)."""
    return tiny_run(data, FMT, out, **flags)


def steps(path: Path) -> list[dict]:
    """The training-step records of a JSONL log, in order."""
    return [r for r in map(json.loads, path.read_text().splitlines()) if "loss" in r]


def pretrain(args: list[str]) -> dict:
    """Run the trainer in this process."""
    from megatron_t2c.training.config import parse_run_config
    from megatron_t2c.training.loop import pretrain as run

    return run(parse_run_config(args))


def _body_pretrain(args: list[str], rank_cache: bool = False) -> None:
    """torchrun body: the same trainer on every rank (optionally each rank with its own index cache)."""
    if rank_cache:  # a node that does not see rank 0's files
        i = args.index("--data-cache-path")
        args = args[:i + 1] + [args[i + 1] + f"-rank{os.environ['RANK']}"] + args[i + 2:]
    result = pretrain(args)
    assert result["iteration"] == result["train_iters"]
    if rank_cache:
        cache = args[args.index("--data-cache-path") + 1]
        assert any(name.endswith("row_index.npy") for name in os.listdir(cache)), os.listdir(cache)  # packed index


def _subprocess(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(REPO / "pretrain_t2c.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO, start_new_session=True)


def _losses(records: list[dict]) -> list[float]:
    return [r["loss"] for r in records]


# ---------------------------------------------------------------------------------------------------
# Learning and logging
# ---------------------------------------------------------------------------------------------------

def test_loss_decreases_and_every_step_is_logged(data, tmp_path):
    pretrain(argv(data, tmp_path, train_iters=30, tensorboard_dir=str(tmp_path / "tb"), hidden_dropout=0.0))
    records = steps(tmp_path / "log.jsonl")
    assert [r["step"] for r in records] == list(range(1, 31))
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "tflops_per_device", "loss_scale", "memory_gib"):
        assert all(isinstance(r[key], float) for r in records), key
    first, last = records[0]["loss"], sum(_losses(records[-5:])) / 5
    assert first > last + 0.7, (first, last)
    # warm-up over 1% of 30 steps rounds to 0 steps; then cosine from --lr to the preset's --min-lr
    expected = [5e-6 + 0.5 * (1e-3 - 5e-6) * (1 + math.cos(math.pi * i / 30)) for i in range(30)]
    assert [r["lr"] for r in records] == pytest.approx(expected, rel=1e-6)
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_schedule_presets_and_epochs(data, tmp_path):
    from megatron_t2c.training.config import STAGE_PRESETS, parse_run_config
    from megatron_t2c.data.gpt_datasets import samples_per_epoch

    run = parse_run_config(argv(data, tmp_path, lr=None))
    assert run.training.resolved_stage(None) == "mapt" and run.training.resolved_stage("MAPT/ckpt") == "mrpt"
    assert run.training.resolved_stage(None, "mrpt") == "mrpt"  # resuming keeps the checkpoint's stage
    assert run.training.preset("mapt") == STAGE_PRESETS["mapt"] == type(STAGE_PRESETS["mapt"])(1e-4, 5e-6, 3.0)
    assert run.training.preset("mrpt") == STAGE_PRESETS["mrpt"] == type(STAGE_PRESETS["mrpt"])(1e-5, 5e-6, 1.0)
    per_epoch = samples_per_epoch([data[0]], "98,2,0", 128)
    result = pretrain(argv(data, tmp_path, train_iters=None, epochs=0.1, global_batch_size=8))
    assert result["train_iters"] == -(-(-(-per_epoch // 10)) // 8)  # ceil(ceil(0.1 * rows) / 8)


def test_yaml_config_and_help(data, tmp_path):
    from megatron_t2c.training.config import parse_run_config

    (tmp_path / "run.yaml").write_text("objective: code\nseparation: partial\nmodel: pangu-350m\nmicro-batch-size: 2\n")
    run = parse_run_config(["--config", str(tmp_path / "run.yaml"), *argv(data, tmp_path)])
    assert (run.training.objective, run.model.separation, run.model.preset, run.training.micro_batch_size) == (
        "code", "partial", "pangu-350m", 4)  # the command line wins over the YAML
    out = subprocess.run([sys.executable, str(REPO / "pretrain_t2c.py"), "--help"], capture_output=True, text=True,
                         check=True).stdout
    for flag in ("--model", "--data-path", "--init-from", "--save-interval", "--log-jsonl", "--epochs",
                 "--tensor-model-parallel-size", "--use-distributed-optimizer", "--recompute-activations"):
        assert flag in out


def test_megatron_flag_spellings(data, tmp_path):
    """A Megatron-LM user's flags mean what they mean there; our own names stay as aliases."""
    from megatron_t2c.training.config import parse_run_config

    run = parse_run_config(argv(data, tmp_path) + [
        "--bf16", "--recompute-granularity", "full", "--recompute-method", "block", "--recompute-num-layers", "2",
        "--exit-duration-in-mins", "30", "--norm-epsilon", "1e-6", "--no-load-optim", "--no-load-rng",
        "--pretrained-checkpoint", "runs/mapt"])
    t, c = run.training, run.checkpoint
    assert (t.precision, t.exit_duration_mins, run.model.layernorm_epsilon) == ("bf16", 30.0, 1e-6)
    assert t.recompute() == {"recompute_granularity": "full", "recompute_method": "block", "recompute_num_layers": 2}
    assert (c.load_optim, c.load_rng, c.init_from) == (False, False, "runs/mapt")
    run = parse_run_config(argv(data, tmp_path) + ["--fp16", "--recompute-activations", "--exit-duration-mins", "5",
                                                   "--layernorm-epsilon", "1e-3", "--init-from", "x"])
    assert (run.training.precision, run.training.exit_duration_mins, run.model.layernorm_epsilon) == ("fp16", 5.0, 1e-3)
    assert run.training.recompute() == {"recompute_granularity": "selective"}
    assert (run.checkpoint.load_optim, run.checkpoint.load_rng, run.checkpoint.init_from) == (True, True, "x")
    assert parse_run_config(argv(data, tmp_path)).training.recompute() == {}
    (tmp_path / "m.yaml").write_text("bf16: true\nrecompute-activations: true\nexit-duration-in-mins: 9\n"
                                     "no-load-optim: true\npretrained-checkpoint: ckpt\n")
    run = parse_run_config(["--config", str(tmp_path / "m.yaml"), *argv(data, tmp_path)])
    assert (run.training.precision, run.training.recompute_granularity, run.training.exit_duration_mins) == (
        "bf16", "selective", 9)
    assert run.checkpoint.init_from == "ckpt"
    bad = parse_run_config(argv(data, tmp_path) + ["--recompute-activations", "--recompute-num-layers", "2"])
    with pytest.raises(ValueError, match="full only"):
        bad.training.recompute()


# ---------------------------------------------------------------------------------------------------
# Resume, stop, checkpoints
# ---------------------------------------------------------------------------------------------------

def test_no_load_optim_and_no_load_rng(data, tmp_path):
    """--no-load-optim: same weights and schedule position, fresh Adam moments; --no-load-rng: fresh dropout."""
    common = dict(hidden_dropout=0.1, attention_dropout=0.1, load=str(tmp_path / "base" / "ckpt" / "iter_0000004"))
    pretrain(argv(data, tmp_path / "base", train_iters=6, save_interval=4, save=str(tmp_path / "base" / "ckpt"),
                  hidden_dropout=0.1, attention_dropout=0.1))
    base = {r["step"]: r for r in steps(tmp_path / "base" / "log.jsonl")}
    runs = {}
    for name, flags in (("exact", {}), ("optim", {"load_optim": False}), ("rng", {"load_rng": False})):
        pretrain(argv(data, tmp_path / name, train_iters=6, **common, **flags))
        runs[name] = {r["step"]: r for r in steps(tmp_path / name / "log.jsonl")}
    exact, optim, rng = runs["exact"], runs["optim"], runs["rng"]
    assert sorted(exact) == sorted(optim) == sorted(rng) == [5, 6]
    assert [exact[s]["loss"] for s in (5, 6)] == [base[s]["loss"] for s in (5, 6)]  # the exact resume
    assert [exact[s]["lr"] for s in (5, 6)] == [optim[s]["lr"] for s in (5, 6)] == [rng[s]["lr"] for s in (5, 6)]
    assert optim[5]["loss"] == exact[5]["loss"]  # same weights, data and dropout draws
    assert optim[6]["loss"] != exact[6]["loss"]  # the update used fresh moments
    assert rng[5]["loss"] != exact[5]["loss"]  # other dropout masks


def test_wandb_logs_offline(data, tmp_path, monkeypatch):
    """--wandb-project without credentials or network: an offline W&B run holding the step figures."""
    pytest.importorskip("wandb", reason="the [wandb] extra is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    pretrain(argv(data, tmp_path, train_iters=3, wandb_project="t2c-test", wandb_exp_name="tiny",
                  wandb_save_dir=str(tmp_path / "wb")))
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "wb").rglob("*"))
    from helpers.wandb_files import history

    rows = history(next(runs[0].glob("run-*.wandb")))
    logged = steps(tmp_path / "log.jsonl")
    assert [r["_step"] for r in rows] == [1, 2, 3]
    assert [r["train/loss"] for r in rows] == [r["loss"] for r in logged]
    assert [r["train/lr"] for r in rows] == [r["lr"] for r in logged]


def test_sigkill_and_resume_gives_identical_losses(data, tmp_path):
    """Dropout on: the RNG states, the data position, the optimiser and the schedule all come back."""
    common = dict(train_iters=12, save_interval=4, hidden_dropout=0.1, attention_dropout=0.1, objective="corrupt-code",
                  separation="partial")
    full = _subprocess(argv(data, tmp_path / "full", save=str(tmp_path / "full" / "ckpt"), **common))
    assert full.wait(timeout=300) == 0, full.stdout.read()

    out = tmp_path / "killed"
    args = argv(data, out, save=str(out / "ckpt"), load=str(out / "ckpt"), **common)
    proc = _subprocess(args)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # kill it after step 6 (a checkpoint at 4; steps 5-6 must be redone)
        if (out / "log.jsonl").exists() and len(steps(out / "log.jsonl")) >= 6:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "ckpt" / "latest_checkpointed_iteration.txt").read_text().strip() == "4"
    resumed = _subprocess(args)
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert "resumed at step 4" in output
    expected, got = steps(tmp_path / "full" / "log.jsonl"), steps(out / "log.jsonl")
    assert [r["step"] for r in got] == list(range(1, 13))  # the log was cut back to step 4 on resume
    for key in ("loss", "grad_norm", "lr"):
        assert [r[key] for r in got] == [r[key] for r in expected], key  # bit for bit


def test_sigterm_saves_and_exits_cleanly(data, tmp_path):
    proc = _subprocess(argv(data, tmp_path, train_iters=1000, save=str(tmp_path / "ckpt")))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if (tmp_path / "log.jsonl").exists() and len(steps(tmp_path / "log.jsonl")) >= 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output
    last = steps(tmp_path / "log.jsonl")[-1]["step"]
    assert "stopped at step" in output
    assert (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text().strip() == str(last)


def test_exit_duration_saves_and_stops(data, tmp_path):
    result = pretrain(argv(data, tmp_path, train_iters=50, exit_duration_mins=0.0, save=str(tmp_path / "ckpt")))
    assert result["stopped"] == "--exit-duration-in-mins reached" and result["iteration"] == 1
    assert (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text().strip() == "1"


def test_checkpoints_are_atomic_and_keep_the_newest(data, tmp_path, monkeypatch):
    from megatron.core import dist_checkpointing

    from megatron_t2c.training.loop import checkpointing

    save = tmp_path / "ckpt"
    pretrain(argv(data, tmp_path, train_iters=6, save_interval=2, keep_checkpoints=2, save=str(save)))
    assert checkpointing.list_iterations(str(save)) == [4, 6]
    assert checkpointing.latest_iteration(str(save)) == 6
    info = checkpointing.read_run_info(str(save))
    assert info["iteration"] == 6 and info["tokenizer"]["sha256"] == checkpointing.file_sha256(data[1])
    assert (save / "iter_0000006" / "tokenizer.model").read_bytes() == Path(data[1]).read_bytes()

    # A crash in the middle of writing the next checkpoint leaves the last good one and its pointer alone.
    real_save = dist_checkpointing.save

    def crash(state, directory, *a, **k):
        real_save(state, directory, *a, **k)
        (Path(directory) / "common.pt").write_bytes(b"torn")
        raise RuntimeError("node lost power")

    monkeypatch.setattr(dist_checkpointing, "save", crash)
    with pytest.raises(RuntimeError, match="power"):
        pretrain(argv(data, tmp_path, train_iters=8, save_interval=2, save=str(save), load=str(save)))
    assert checkpointing.latest_iteration(str(save)) == 6
    assert checkpointing.list_iterations(str(save)) == [4, 6]
    monkeypatch.setattr(dist_checkpointing, "save", real_save)
    result = pretrain(argv(data, tmp_path, train_iters=8, save_interval=2, save=str(save), load=str(save)))
    assert result["losses"] and checkpointing.latest_iteration(str(save)) == 8
    assert not [p for p in os.listdir(save) if p.endswith(".partial")]
    # stopped after renaming a new iteration but before moving the pointer: the newest complete one is used
    (save / "latest_checkpointed_iteration.txt").unlink()
    assert checkpointing.has_checkpoint(str(save)) and checkpointing.resolve(str(save)).endswith("iter_0000008")
    assert not checkpointing.has_checkpoint(str(tmp_path / "nothing-saved-here"))


# ---------------------------------------------------------------------------------------------------
# Parallel equivalence (torchrun, 2 CPU ranks)
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def start(data, tmp_path_factory):
    """A one-step MAPT checkpoint: every layout starts from its weights (megatron draws initial weights
    differently per layout -- pipeline stages are seeded apart, the table's shape depends on TP)."""
    out = tmp_path_factory.mktemp("start")
    pretrain(argv(data, out, train_iters=1, save=str(out / "ckpt")))
    return str(out / "ckpt")


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory, start):
    """One rank, TP=PP=DP=1, no dropout, 6 MRPT steps (partial separation, prefix-code); saved at step 3."""
    out = tmp_path_factory.mktemp("reference")
    pretrain(argv(data, out, **_EQUIVALENCE, init_from=start, save=str(out / "ckpt"), save_interval=3))
    return steps(out / "log.jsonl")


_EQUIVALENCE = dict(train_iters=6, hidden_dropout=0.0, attention_dropout=0.0, separation="partial",
                    objective="prefix-code")


@pytest.mark.parametrize("layout", ["tp2", "pp2", "dp2-distopt"])
def test_parallel_layouts_reproduce_single_rank_losses(data, tmp_path, start, reference, layout):
    flags = dict(_EQUIVALENCE, init_from=start)
    if layout == "tp2":
        flags.update(tensor_model_parallel_size=2, save=str(tmp_path / "ckpt"), save_interval=3)
    elif layout == "pp2":
        flags.update(pipeline_model_parallel_size=2)
    else:
        flags.update(micro_batch_size=2, use_distributed_optimizer=True)
    args = argv(data, tmp_path, **flags)
    run_with_torchrun(__file__, "_body_pretrain", kwargs={"args": args, "rank_cache": layout.startswith("dp2")},
                      timeout=240)
    got = steps(tmp_path / "log.jsonl")
    assert _losses(got) == pytest.approx(_losses(reference), abs=2e-5)
    assert [r["grad_norm"] for r in got] == pytest.approx([r["grad_norm"] for r in reference], rel=1e-4)
    if layout == "tp2":  # the TP=2 checkpoint of step 3 continues at TP=1 with the same losses
        out = tmp_path / "tp1"
        pretrain(argv(data, out, **_EQUIVALENCE, load=str(tmp_path / "ckpt" / "iter_0000003")))
        resumed = steps(out / "log.jsonl")
        assert [r["step"] for r in resumed] == [4, 5, 6]
        assert _losses(resumed) == pytest.approx(_losses(reference)[3:], abs=2e-5)


# ---------------------------------------------------------------------------------------------------
# MAPT -> MRPT
# ---------------------------------------------------------------------------------------------------

def test_mrpt_starts_from_the_mapt_loss(data, tmp_path):
    mapt = tmp_path / "mapt"
    pretrain(argv(data, mapt, train_iters=4, hidden_dropout=0.0, attention_dropout=0.0, save=str(mapt / "ckpt")))
    first = {}
    for separation in ("none", "partial", "full"):
        out = tmp_path / separation
        pretrain(argv(data, out, train_iters=1, hidden_dropout=0.0, attention_dropout=0.0, separation=separation,
                      init_from=str(mapt / "ckpt"), lr=None))
        record = steps(out / "log.jsonl")[0]
        first[separation] = record["loss"]
        assert record["lr"] == pytest.approx(1e-5)  # the MRPT preset: a new schedule, not the MAPT one
    mapt_loss = steps(mapt / "log.jsonl")[-1]["loss"]
    assert first["partial"] == pytest.approx(first["none"], abs=1e-5)
    assert first["full"] == pytest.approx(first["none"], abs=1e-5)
    assert first["none"] < mapt_loss + 0.5  # the MAPT weights, not a fresh model (ln 1500 = 7.3)


# ---------------------------------------------------------------------------------------------------
# Errors a user meets
# ---------------------------------------------------------------------------------------------------

def test_clear_errors(data, tmp_path):
    from megatron_t2c.training.checkpointing import CheckpointError
    from megatron_t2c.data.gpt_datasets import DataError
    from helpers.t2c_data import tiny_tokenizer

    with pytest.raises(DataError, match="1200"):
        pretrain(argv(data, tmp_path, tokenizer_model=str(tiny_tokenizer("bpe", vocab_size=1200))))
    with pytest.raises(DataError, match="missing .*nowhere.bin"):
        pretrain(argv(data, tmp_path, data_path=str(tmp_path / "nowhere")))

    mrpt = tmp_path / "mrpt"
    pretrain(argv(data, mrpt, train_iters=2, separation="partial", save=str(mrpt / "ckpt")))
    with pytest.raises(CheckpointError, match="already has separation 'partial'"):
        pretrain(argv(data, tmp_path / "x", init_from=str(mrpt / "ckpt"), separation="full"))
    with pytest.raises(CheckpointError, match="separates"):
        pretrain(argv(data, tmp_path / "y", load=str(mrpt / "ckpt"), separation="full"))
    with pytest.raises(CheckpointError, match="hidden_size is 64 in the checkpoint, 32 here"):
        pretrain(argv(data, tmp_path / "z", load=str(mrpt / "ckpt"), separation="partial", hidden_size=32))

    for name in os.listdir(mrpt / "ckpt" / "iter_0000002"):
        if name.endswith(".distcp"):
            (mrpt / "ckpt" / "iter_0000002" / name).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="damaged or incomplete"):
        pretrain(argv(data, tmp_path / "w", load=str(mrpt / "ckpt"), separation="partial"))
    (mrpt / "ckpt" / "latest_checkpointed_iteration.txt").write_text("7\n")
    with pytest.raises(CheckpointError, match="names iteration 7"):
        pretrain(argv(data, tmp_path / "v", init_from=str(mrpt / "ckpt")))
