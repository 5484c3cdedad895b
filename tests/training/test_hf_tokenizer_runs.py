"""Training, checkpoints and generation with a Hugging Face tokenizer directory (byte-level BPE).

A first tiny run stores the tokenizer in its checkpoint as the canonical ``tokenizer/`` directory; a second
run with ``--init-from`` that checkpoint states neither the tokenizer nor the architecture (MRPT from an
imported backbone) and separates the byte-level pieces of the PES list (``Ġreturn`` ...).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.hf_tokenizers import hf_indexed_dataset, tiny_hf_tokenizer
from helpers.training_runs import tiny_run

FMT = "pycodegpt"


def pretrain(args: list[str]) -> dict:
    from megatron_t2c.training.config import parse_run_config
    from megatron_t2c.training.loop import pretrain as run

    return run(parse_run_config(args))


@pytest.fixture(scope="module")
def mapt(tmp_path_factory) -> Path:
    """A 2-step run with the HF tokenizer and a non-default tiny architecture; returns its checkpoint dir
    (512-token context: HumanEval prompts in an 800-piece vocabulary)."""
    out = tmp_path_factory.mktemp("hf-mapt")
    data = (hf_indexed_dataset(FMT), str(tiny_hf_tokenizer()))
    pretrain(tiny_run(data, FMT, out, train_iters=2, ffn_hidden_size=96, seq_length=512, save=str(out / "ckpt")))
    return out / "ckpt"


def test_checkpoint_stores_the_canonical_tokenizer(mapt):
    from megatron_t2c.tokenizer.huggingface import OFFSET, HFTokenizerCore
    from megatron_t2c.tokenizer.loading import tokenizer_fingerprint
    from megatron_t2c.training import checkpointing

    ckpt = checkpointing.resolve(str(mapt))
    stored = checkpointing.tokenizer_path(ckpt)
    assert stored == str(Path(ckpt) / "tokenizer") and not (Path(ckpt) / "tokenizer.model").exists()
    assert sorted(p.name for p in Path(stored).iterdir()) == ["hf_tokenizer.json", "t2c_tokenizer.json",
                                                              "tokenizer.json"]
    info = checkpointing.read_run_info(ckpt)
    assert info["tokenizer"] == {"sha256": tokenizer_fingerprint(tiny_hf_tokenizer()), "file": "tokenizer",
                                 "kind": "huggingface"}
    assert info["vocab_size"] == OFFSET + 800 == HFTokenizerCore(stored).vocab_size
    assert info["architecture"]["ffn_hidden_size"] == 96 and info["architecture"]["num_layers"] == 2
    assert info["architecture"]["seq_length"] == 512


def test_mrpt_from_the_checkpoint_without_tokenizer_or_architecture(mapt, tmp_path):
    out = tmp_path / "mrpt"
    data = (hf_indexed_dataset(FMT), None)
    args = tiny_run(data, FMT, out, train_iters=2, num_layers=None, hidden_size=None, num_attention_heads=None,
                    seq_length=None, init_from=str(mapt), separation="partial", save=str(out / "ckpt"))
    assert "--tokenizer-model" not in args and "--num-layers" not in args
    pretrain(args)
    from megatron_t2c.training import checkpointing

    info = checkpointing.read_run_info(str(out / "ckpt"))
    first = checkpointing.read_run_info(str(mapt))
    assert info["architecture"] == first["architecture"] and info["stage"] == "mrpt"
    assert info["tokenizer"]["sha256"] == first["tokenizer"]["sha256"] and info["tokenizer"]["kind"] == "huggingface"
    separated = info["separated_ids"]
    assert separated and min(separated) >= 15
    from megatron_t2c.tokenizer.huggingface import HFTokenizerCore

    tok = HFTokenizerCore(checkpointing.tokenizer_path(str(out / "ckpt")))
    pieces = {tok.id_to_piece(i) for i in separated}
    assert any(p.startswith("\u0120") for p in pieces)  # byte-level word-boundary pieces are matched


def test_architecture_flags_that_differ_are_refused(mapt, tmp_path):
    from megatron_t2c.training.checkpointing import CheckpointError

    data = (hf_indexed_dataset(FMT), None)
    with pytest.raises(CheckpointError, match="hidden_size|architecture"):
        pretrain(tiny_run(data, FMT, tmp_path / "x", train_iters=2, hidden_size=32, init_from=str(mapt)))


def test_no_tokenizer_anywhere_is_one_clear_error(tmp_path):
    from megatron_t2c.data.gpt_datasets import DataError

    with pytest.raises(DataError, match="--tokenizer-model is required"):
        pretrain(tiny_run((hf_indexed_dataset(FMT), None), FMT, tmp_path / "y", train_iters=2))


def test_generate_from_the_checkpoint(mapt, tmp_path):
    from megatron_t2c.evaluation.generate import main

    out = tmp_path / "samples.jsonl"
    summary = main(["--task", "humaneval", "--checkpoint", str(mapt), "--cpu", "--max-new-tokens", "6",
                    "--no-progress", "--batch-size", "2", "--output", str(out), "--limit", "2", "--greedy"])
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert summary["generated"] == 2 and len(records) == 2
    assert all(0 < r["num_tokens"] <= 6 and r["stop"] in ("eoc", "length") for r in records)
