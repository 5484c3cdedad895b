"""The main job's stages after the data pipeline (megatron_t2c.pipeline.main_job), end to end at the smallest size:
MAPT -> one MRPT run -> HumanEval/MBPP generation and execution -> HF export with --verify -> report; a re-run
skips every finished stage."""

from __future__ import annotations

import json
import os
from pathlib import Path

TINY = ["--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "2", "--seq-length", "512",
        "--micro-batch-size", "2", "--global-batch-size", "2", "--mapt-iters", "2", "--mrpt-epochs", "0.002",
        "--runs", "code:partial", "--max-new-tokens", "4", "--n-samples", "2", "--sample-problems", "2",
        "--incremental-prompts", "2", "--greedy-problems", "3", "--eval-batch-size", "8", "--workers", "2",
        "--export", "mapt", "mrpt_code_partial", "--cpu"]


def _run_dir(tmp_path: Path) -> Path:
    """A run directory whose data/ is what examples/quickstart.sh writes (real stdlib records and datasets)."""
    from helpers.modality_data import indexed_dataset
    from helpers.t2c_data import corpus_jsonl, tiny_tokenizer

    data = tmp_path / "run" / "data"
    data.mkdir(parents=True)
    for include in ("all", "text_code"):
        for ext in (".bin", ".idx"):
            os.symlink(indexed_dataset("pangu") + ext, data / f"pangu_{include}{ext}")
    os.symlink(tiny_tokenizer("bpe"), data / "tokenizer.model")
    os.symlink(corpus_jsonl(), data / "functions.jsonl")
    return tmp_path / "run"


def test_pipeline_runs_every_stage_and_a_rerun_skips_them(tmp_path, capsys):
    from megatron_t2c.utils.dataclass_flags import parse_config
    from megatron_t2c.pipeline.main_job import Pipeline, PipelineConfig

    from megatron_t2c.evaluation.tasks import load_problems

    run = _run_dir(tmp_path)
    Pipeline(parse_config(PipelineConfig, [str(run), *TINY])).run()
    # incremental: whole problems (at least one), each its plain prompt plus all its incremental prompts
    incremental = {task: 1 + len(load_problems(task)[0].incremental()) for task in ("humaneval", "mbpp")}
    for name in ("mapt", "mrpt_code_partial"):
        assert (run / "train" / name / "checkpoints" / "latest_checkpointed_iteration.txt").exists()
        for task in ("humaneval", "mbpp"):
            for mode in ("greedy", "sampled", "incremental"):
                summary = json.loads((run / "eval" / name / task / f"{mode}.summary.json").read_text())
                assert summary["samples"] == {"greedy": 3, "sampled": 4, "incremental": incremental[task]}[mode]
                assert ("incremental_pass@1" if mode == "incremental" else "pass@1") in summary
        verify = json.loads((run / "hf" / name / "verify.json").read_text())
        assert verify["ok"] and verify["max_abs_diff"] <= 1e-4
    assert (run / "hf" / "mapt" / "config.json").exists()
    report = (run / "report.md").read_text()
    assert "mrpt_code_partial" in report or "code" in report
    assert list(run.glob("*.png"))
    timings = json.loads((run / "timings.json").read_text())
    assert "MAPT" in timings and any(k.startswith("generate mapt humaneval") for k in timings)

    capsys.readouterr()
    Pipeline(parse_config(PipelineConfig, [str(run), *TINY])).run()
    out = capsys.readouterr().out
    assert "== MAPT: done already" in out and "== MRPT code / partial: done already" in out
    assert "done already" in out.split("== generate mapt humaneval greedy")[1].split("\n")[0]
