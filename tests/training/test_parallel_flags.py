"""megatron's parallelism flags on pretrain_t2c.py: --overlap-grad-reduce / --overlap-param-gather reproduce
the single-rank run (checkpoints and validation included), and the combinations that cannot work are refused
in one line.  Tiny runs as in test_loop.py (2 layers, hidden 64, 128-token rows, 2 CPU ranks via torchrun).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.training_runs import stdlib_data, tiny_run

from helpers.torchrun import run_with_torchrun

FMT = "pycodegpt"


@pytest.fixture(scope="module")
def data():
    return stdlib_data(FMT)


def argv(data, out: Path, **flags) -> list[str]:
    return tiny_run(data, FMT, out, **{"train_iters": 6, "hidden_dropout": 0.0, "attention_dropout": 0.0,
                                       "eval_interval": 3, "eval_iters": 1, **flags})


def records(path: Path) -> tuple[list[float], list[float]]:
    """(training losses, validation losses) of a JSONL log, in order."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r], [r["valid_loss"] for r in rows if "valid_loss" in r]


def pretrain(args: list[str]) -> dict:
    from megatron_t2c.training.config import parse_run_config
    from megatron_t2c.training.loop import pretrain as run

    return run(parse_run_config(args))


def _body_pretrain(args: list[str]) -> None:
    result = pretrain(args)
    assert result["iteration"] == result["train_iters"]


def test_overlapped_gradient_reduce_and_parameter_gather_reproduce_one_rank(data, tmp_path):
    from megatron_t2c.hf.export import MegatronTensors

    reference = tmp_path / "reference"
    pretrain(argv(data, reference, save=str(reference / "ckpt"), save_interval=2))
    want_train, want_valid = records(reference / "log.jsonl")
    assert len(want_train) == 6 and len(want_valid) == 2

    # DP=2, distributed optimiser, both overlaps; the checkpoint of step 2 is written while the parameter
    # all-gather would otherwise still wait for the next forward pass
    overlap = tmp_path / "overlap"
    args = argv(data, overlap, micro_batch_size=2, use_distributed_optimizer=True, overlap_grad_reduce=True,
                overlap_param_gather=True, save=str(overlap / "ckpt"), save_interval=2)
    run_with_torchrun(__file__, "_body_pretrain", kwargs={"args": args}, timeout=240)
    got_train, got_valid = records(overlap / "log.jsonl")
    assert got_train == pytest.approx(want_train, abs=2e-5)
    assert got_valid == pytest.approx(want_valid, abs=2e-5)

    # ... and that checkpoint holds the weights of step 2 (what an export reads), not those of step 1
    want, got = (MegatronTensors(str(run / "ckpt" / "iter_0000002")) for run in (reference, overlap))
    assert sorted(got.shapes) == sorted(want.shapes)
    for key in want.shapes:
        assert (got.load(key) - want.load(key)).abs().max().item() < 1e-5, key


@pytest.mark.parametrize("flags, message", [
    (dict(sequence_parallel=True), "--sequence-parallel needs --tensor-model-parallel-size > 1"),
    (dict(overlap_param_gather=True, overlap_grad_reduce=True), "needs --use-distributed-optimizer"),
    (dict(overlap_param_gather=True, use_distributed_optimizer=True), "needs --overlap-grad-reduce"),
])
def test_impossible_combinations_are_refused_in_one_line(data, tmp_path, flags, message):
    from megatron_t2c.training.loop import TrainingError

    with pytest.raises(TrainingError, match=message) as err:
        pretrain(argv(data, tmp_path, **flags))
    assert "\n" not in str(err.value)


def test_sequence_parallel_without_apex_is_refused_before_anything_starts(data, tmp_path):
    from megatron_t2c.training.config import parse_run_config
    from megatron_t2c.training.loop import TrainingError, apex_layer_norm_available, check_parallel_flags

    run = parse_run_config(argv(data, tmp_path, sequence_parallel=True, tensor_model_parallel_size=2))
    if apex_layer_norm_available():
        check_parallel_flags(run)  # with Apex it is accepted
    else:
        with pytest.raises(TrainingError, match="--sequence-parallel needs Apex"):
            check_parallel_flags(run)
