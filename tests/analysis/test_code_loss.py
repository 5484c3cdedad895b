"""Held-out code loss (megatron_t2c/analysis/code_loss.py) on a tiny trained checkpoint: the scored sequence
is the benchmark prompt followed by the reference as a training sample, and the loss equals the model's own
training loss over those positions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

FMT = "pangu"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from helpers.modality_data import indexed_dataset
    from helpers.t2c_data import tiny_tokenizer

    from megatron_t2c.training.config import parse_run_config
    from megatron_t2c.training.loop import pretrain

    out = tmp_path_factory.mktemp("code_loss")
    pretrain(parse_run_config([
        "--cpu", "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "256",
        "--data-path", indexed_dataset(FMT), "--tokenizer-model", str(tiny_tokenizer("bpe")), "--format", FMT,
        "--train-iters", "3", "--micro-batch-size", "4", "--global-batch-size", "4", "--lr", "1e-3",
        "--objective", "prefix-code", "--save", str(out / "ckpt"), "--data-cache-path", str(out / "cache")]))
    return out / "ckpt"


def test_the_scored_sequence_is_the_reference_as_a_training_sample():
    from helpers.t2c_data import tiny_tokenizer

    from megatron_t2c.analysis.code_loss import reference_sequences
    from megatron_t2c.evaluation.tasks.humaneval import load_humaneval
    from megatron_t2c.mrpt.formats import format_code, sample_text
    from megatron_t2c.mrpt.normalise import normalise
    from megatron_t2c.mrpt import special_tokens as st
    from megatron_t2c.tokenizer.sentencepiece import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_tokenizer("bpe")))
    problems = load_humaneval()
    for fmt in ("pangu", "pycodegpt"):
        refs, skipped = reference_sequences(problems, tokenizer, fmt)
        assert len(refs) + sum(skipped.values()) == len(problems) and len(refs) > 150
        by_id = {p.task_id: p for p in problems}
        for ref in refs:
            problem = by_id[ref.task_id]
            assert list(ref.ids[:ref.prompt_length]) == tokenizer.encode_sample(problem.prompt(fmt))
            assert ref.ids[-1] == st.EOC_ID and ref.prompt_length < len(ref.ids) - 1
            sample = sample_text(format_code(normalise(problem.function), problem.description, fmt))
            assert tokenizer.detokenize(ref.ids) == sample, ref.task_id
    short, skipped = reference_sequences(problems, tokenizer, FMT, max_length=64)
    assert all(len(r.ids) <= 64 for r in short) and skipped["too_long"] == len(problems) - len(short)


def test_loss_equals_the_training_loss_path(checkpoint, dist):
    from megatron_t2c.analysis.code_loss import code_loss, reference_sequences
    from megatron_t2c.evaluation.tasks.humaneval import load_humaneval
    from megatron_t2c.mrpt.modality import modality_ids, segment_ids
    from megatron_t2c.mrpt.objectives import attention_mask, position_ids
    from megatron_t2c.tokenizer.sentencepiece import load_tokenizer
    from megatron_t2c.training import checkpointing

    model, info = checkpointing.model_from_checkpoint(str(checkpoint))
    tokenizer = load_tokenizer(checkpointing.tokenizer_path(str(checkpoint)))
    refs, _ = reference_sequences(load_humaneval()[:6], tokenizer, FMT, max_length=256)
    result = code_loss(model, refs, FMT, info["objective"])
    total = tokens = 0.0
    for ref in refs:  # the model's own per-token loss (labels in, losses out), as training computes it
        ids = torch.tensor([ref.ids], dtype=torch.long)
        labels = torch.cat([ids[:, 1:], torch.zeros_like(ids[:, :1])], dim=1)
        mask = torch.zeros_like(ids, dtype=torch.float)
        mask[0, ref.prompt_length - 1:len(ref.ids) - 1] = 1
        with torch.no_grad():
            losses = model(model.rows(ids, modality_ids(ids, FMT)), position_ids(ids),
                           attention_mask(ids, FMT, info["objective"]), labels=labels, loss_mask=mask,
                           label_modality=segment_ids(ids, FMT))
        total += float((losses * mask).sum())
        tokens += float(mask.sum())
    assert result["tokens"] == tokens and result["problems"] == len(refs)
    assert result["loss"] == pytest.approx(total / tokens, rel=1e-5)
    assert 0 < result["loss"] < math.log(tokenizer.vocab_size) + 1


def test_command_writes_json_and_a_table(checkpoint, tmp_path, capsys):
    from megatron_t2c.__main__ import main

    out = tmp_path / "code_loss.json"
    assert main(["code-loss", str(checkpoint), "--limit", "5", "--output", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert set(result["tasks"]) == {"humaneval", "mbpp"}
    for task in ("humaneval", "mbpp"):
        scores = result["tasks"][task]
        assert scores["problems"] + sum(scores["skipped"].values()) == 5 and scores["tokens"] > 0
        assert math.isfinite(scores["loss"]) and scores["perplexity"] == pytest.approx(math.exp(scores["loss"]))
    assert "| humaneval |" in capsys.readouterr().out


def test_report_section(checkpoint, tmp_path):
    from megatron_t2c.analysis.code_loss import CodeLossConfig, measure, result_path
    from megatron_t2c.analysis.report import build_report

    run = tmp_path / "run"
    measure(CodeLossConfig(checkpoint=str(checkpoint), output=result_path(str(run), "mapt"), tasks=["humaneval"],
                           limit=4, progress=False))
    result = build_report(str(run), embeddings=False, contamination=False)
    assert result["sections"]["Held-out code loss"] == "ok"
    text = (run / "report.md").read_text()
    section = text.split("## Held-out code loss", 1)[1].split("\n## ", 1)[0]
    loss = json.loads(Path(result_path(str(run), "mapt")).read_text())["tasks"]["humaneval"]["loss"]
    assert f"| `mapt` | prefix-code | none | {loss:.4f} |" in section
    assert (run / "code_loss.png").stat().st_size > 0 and "![held-out code loss](code_loss.png)" in section
