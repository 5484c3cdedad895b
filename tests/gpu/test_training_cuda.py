"""pretrain_t2c.py on CUDA with NCCL (torchrun, one rank), bf16: the loss falls over 30 steps; save -> SIGKILL
-> resume continues bit for bit; the HF export of a checkpoint written from GPU tensors passes --verify."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.training_runs import stdlib_data, tiny_run

REPO = Path(__file__).resolve().parents[2]
FMT = "pangu"


@pytest.fixture(scope="module")
def data():
    return stdlib_data(FMT)


def argv(data, out: Path, **flags) -> list[str]:
    return tiny_run(data, FMT, out, **{"cpu": None, "hidden_size": 128, "seq_length": 256, "train_iters": 30,
                                       "micro_batch_size": 8, "global_batch_size": 16, "precision": "bf16", **flags})


def torchrun(args: list[str]) -> subprocess.Popen:
    """pretrain_t2c.py under torchrun, one CUDA rank (NCCL), in its own process group."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", CUBLAS_WORKSPACE_CONFIG=":4096:8")
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                             str(REPO / "pretrain_t2c.py"), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, cwd=REPO, start_new_session=True)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process under it (torchrun starts its ranks in sessions of their own,
    so killing the launcher's process group would leave them training)."""
    import psutil

    launcher = psutil.Process(proc.pid)
    ranks = launcher.children(recursive=True)
    for p in [*ranks, launcher]:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    psutil.wait_procs(ranks, timeout=30)


def steps(path: Path) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if "loss" in r]


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A 30-step bf16 MRPT-style run (partial separation, prefix-code) saved at the end: its directory."""
    out = tmp_path_factory.mktemp("cuda-run")
    proc = torchrun(argv(data, out, separation="partial", objective="prefix-code", hidden_dropout=0.0,
                         save=str(out / "ckpt")))
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output[-5000:]
    return out


def test_bf16_loss_falls_over_30_steps_on_cuda(trained):
    records = steps(trained / "log.jsonl")
    assert [r["step"] for r in records] == list(range(1, 31))
    assert all(r["precision"] == "bf16" and r["memory_gib"] > 0 for r in records)  # CUDA memory was used
    first, last = sum(r["loss"] for r in records[:3]) / 3, sum(r["loss"] for r in records[-5:]) / 5
    assert first > last + 0.7, (first, last)


def test_sigkill_and_resume_is_bit_identical_on_cuda(data, tmp_path):
    common = dict(train_iters=12, save_interval=4, objective="corrupt-code", separation="partial")
    full = torchrun(argv(data, tmp_path / "full", save=str(tmp_path / "full" / "ckpt"), **common))
    output = full.communicate(timeout=300)[0]
    assert full.returncode == 0, output[-5000:]

    out = tmp_path / "killed"
    args = argv(data, out, save=str(out / "ckpt"), load=str(out / "ckpt"), **common)
    proc = torchrun(args)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # kill it after step 6 (a checkpoint at 4; steps 5-6 must be redone)
        if (out / "log.jsonl").exists() and len(steps(out / "log.jsonl")) >= 6:
            break
        time.sleep(0.05)
    kill_tree(proc)
    assert (out / "ckpt" / "latest_checkpointed_iteration.txt").read_text().strip() == "4"
    resumed = torchrun(args)
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output[-5000:]
    assert "resumed at step 4" in output
    expected, got = steps(tmp_path / "full" / "log.jsonl"), steps(out / "log.jsonl")
    assert [r["step"] for r in got] == list(range(1, 13))
    for key in ("loss", "grad_norm", "lr"):
        want, have = [r[key] for r in expected], [r[key] for r in got]
        worst = max(abs(a - b) for a, b in zip(want, have))
        assert have == want, f"{key} differs after resume by up to {worst:.3e}: {want} vs {have}"


def test_hf_export_of_a_cuda_checkpoint_verifies(trained, tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "tools" / "convert_checkpoint.py"), "--to-hf", "--load",
                           str(trained / "ckpt"), "--output", str(tmp_path / "hf"), "--verify"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "verify: max |logit difference|" in done.stdout and "OK" in done.stdout
    assert (tmp_path / "hf" / "config.json").exists()
