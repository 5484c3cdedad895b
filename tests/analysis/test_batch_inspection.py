"""tools/inspect_batch.py end to end: packed sequences as JSON, per position, for objectives and separations."""

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from megatron_t2c.mrpt import objectives as O
from megatron_t2c.mrpt import separation as S
from megatron_t2c.analysis.batch_inspection import InspectConfig, inspect, pack
from megatron_t2c.mrpt.modality import modality_ids
from helpers.modality_data import documents, indexed_dataset, pieces, stream, tiny_tokenizer
from helpers.t2c_data import corpus_jsonl

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "inspect_batch.py"
FIELDS = {"piece", "token_id", "modality", "row", "position_id", "loss", "input_id", "input_piece", "label_id",
          "attends", "document", "padding"}
NAMES = {0: "shared", 1: "docstring", 2: "code"}


def _run(*args):
    proc = subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def _continuous(ids, seq_length):
    """GPTDataset packing of the stream ``ids``: row ``n`` is ``ids[n*S : n*S + S + 1]``."""
    n = (len(ids) - 1) // seq_length
    return np.stack([ids[i * seq_length:i * seq_length + seq_length + 1] for i in range(n)])


def _whole(docs, seq_length):
    """Whole documents in order, next-fit, padded with <pad>: a plain loop (the reference)."""
    rows, row = [], []
    for doc in docs:
        doc = list(doc)
        if len(doc) > seq_length + 1:
            continue
        if len(row) + len(doc) > seq_length + 1:
            rows.append(row + [0] * (seq_length + 1 - len(row)))
            row = []
        row += doc
    if row:
        rows.append(row + [0] * (seq_length + 1 - len(row)))
    return np.array(rows)


def _check(sequences, fmt, objective, separated, packed_rows, seq_length):
    """Every field of every position against the library and the packed rows."""
    vocab = pieces()
    code_rows = {t: j for j, t in enumerate(separated)}
    for n, seq in enumerate(sequences):
        assert seq["sequence"] == seq["sample_id"] == n and seq["format"] == fmt and seq["objective"] == objective
        assert seq["separated"] == len(separated) and seq["vocab_size"] == len(vocab)
        positions = seq["positions"]
        assert len(positions) == seq["seq_length"] == seq_length and all(set(p) == FIELDS for p in positions)
        row = packed_rows[n]
        tokens, labels = torch.from_numpy(row[:-1]), torch.from_numpy(row[1:])
        assert [p["token_id"] for p in positions] == tokens.tolist()
        assert [p["label_id"] for p in positions] == labels.tolist()
        assert [p["piece"] for p in positions] == [vocab[t] for t in tokens.tolist()]
        assert [p["input_piece"] for p in positions] == [vocab[p["input_id"]] for p in positions]
        mods = modality_ids(torch.from_numpy(row), fmt)[:-1].tolist()
        assert [p["modality"] for p in positions] == [NAMES[m] for m in mods]
        assert [p["position_id"] for p in positions] == O.position_ids(tokens).tolist()
        assert [p["loss"] for p in positions] == O.loss_mask(tokens, labels, fmt, objective).bool().tolist()
        mask = O.attention_mask(tokens, fmt, objective, labels=labels)
        assert [p["attends"] for p in positions] == O.attends(mask)
        for i, p in enumerate(positions):
            if p["input_id"] != p["token_id"]:
                assert objective == "corrupt-code" and p["modality"] == "docstring"
            has_code_row = p["modality"] == "code" and p["input_id"] in code_rows
            assert p["row"] == (len(vocab) + code_rows[p["input_id"]] if has_code_row else p["input_id"])
            start, end = p["attends"][0]
            assert start <= i < end and (end == i + 1 or objective == "prefix-code")
        docs = O.document_ids(tokens).tolist()
        padded = seq["packing"] == "whole" and (row == 0).any()
        first_pad = int(np.argmax(row == 0)) if padded else seq_length
        assert [p["padding"] for p in positions] == [i >= first_pad for i in range(seq_length)]
        assert [p["document"] for p in positions] == [d if i < first_pad else None for i, d in enumerate(docs)]
        assert seq["padding"] == seq_length - first_pad


def test_help_has_an_example():
    proc = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for flag in ("--tokenizer-model", "--format", "--objective", "--separation", "--dataset", "--k", "--input",
                 "--seq-length", "--seed", "--max-sequences"):
        assert flag in proc.stdout
    assert "example" in proc.stdout


def test_cli_records_prefix_code_partial():
    model = str(tiny_tokenizer("bpe"))
    sequences, _ = _run("--tokenizer-model", model, "--input", str(corpus_jsonl()), "--format", "pangu",
                        "--objective", "prefix-code", "--separation", "partial", "--seq-length", "64",
                        "--max-sequences", "5", "--packing", "continuous")
    assert len(sequences) == 5
    separated = S.separated_token_ids("partial", pieces())
    _check(sequences, "pangu", "prefix-code", separated, _continuous(stream("pangu", "text-code"), 64), 64)
    rows = [p["row"] for s in sequences for p in s["positions"]]
    assert max(rows) >= len(pieces())  # some code tokens use their code row
    assert any(end > i + 1 for s in sequences for i, p in enumerate(s["positions"]) for _, end in p["attends"])


def test_cli_dataset_corrupt_code_auto():
    model = str(tiny_tokenizer("bpe"))
    prefix = indexed_dataset("pycodegpt")
    args = ["--tokenizer-model", model, "--dataset", prefix, "--format", "pycodegpt", "--objective",
            "corrupt-code", "--separation", "auto", "--k", "30", "--seq-length", "96", "--max-sequences", "6",
            "--seed", "11", "--print-separation", "--packing", "continuous"]
    sequences, err = _run(*args)
    docs = [ids for _, ids in documents("pycodegpt", "all")]
    counts = S.count_modality_usage(docs, "pycodegpt", len(pieces()))
    separated = S.separated_token_ids("auto", pieces(), k=30, doc_counts=counts[0], code_counts=counts[1])
    assert err.strip() == S.describe(separated, pieces())
    _check(sequences, "pycodegpt", "corrupt-code", separated, _continuous(np.concatenate(docs), 96), 96)
    inputs = torch.tensor([[p["input_id"] for p in s["positions"]] for s in sequences])
    tokens = torch.tensor([[p["token_id"] for p in s["positions"]] for s in sequences])
    last = torch.tensor([[s["positions"][-1]["label_id"]] for s in sequences])
    modality = modality_ids(torch.cat([tokens, last], 1), "pycodegpt")[:, :-1]
    assert torch.equal(inputs, O.corrupt(tokens, modality, seed=11, sample_ids=torch.arange(6),
                                         vocab_size=len(pieces())))
    assert (inputs != tokens).any()
    # the same seed gives the same corruption, another seed another one (in process: no second start-up)
    config = InspectConfig(tokenizer_model=model, dataset=prefix, format="pycodegpt", objective="corrupt-code",
                           separation="auto", k=30, seq_length=96, max_sequences=6, seed=11, packing="continuous")
    again, other = io.StringIO(), io.StringIO()
    inspect(config, again)
    config.seed = 12
    inspect(config, other)
    assert [json.loads(line) for line in again.getvalue().splitlines()] == sequences
    assert other.getvalue() != again.getvalue()


@pytest.mark.parametrize("fmt,objective,separation,packing", [("pycodegpt", "code", "full", "continuous"),
                                                               ("pangu", "text-code", "none", "continuous"),
                                                               ("pycodegpt", "code", "partial", "whole"),
                                                               ("pangu", "prefix-code", "none", "whole")])
def test_in_process(fmt, objective, separation, packing):
    out, err = io.StringIO(), io.StringIO()
    seq = 48 if packing == "continuous" else 256
    config = InspectConfig(tokenizer_model=str(tiny_tokenizer("bpe")), input=str(corpus_jsonl()), format=fmt,
                           objective=objective, separation=separation, include="all", seq_length=seq,
                           max_sequences=3, packing=packing)
    assert inspect(config, out, err) == 3
    sequences = [json.loads(line) for line in out.getvalue().splitlines()]
    docs = [ids for _, ids in documents(fmt, "all")]
    rows = _continuous(stream(fmt, "all"), seq) if packing == "continuous" else _whole(docs, seq)
    _check(sequences, fmt, objective, S.separated_token_ids(separation, pieces()), rows, seq)
    if packing == "whole":  # the user sees the padding: positions after the last document, without loss
        assert all(s["padding"] > 0 for s in sequences) and all(s["documents"] >= 1 for s in sequences)
        pads = [p for s in sequences for p in s["positions"] if p["padding"]]
        assert pads and not any(p["loss"] for p in pads) and all(p["document"] is None for p in pads)
        assert "dropped" in err.getvalue() or all(len(d) <= seq + 1 for d in docs)


def test_pack_and_errors(tmp_path, capsys):
    docs = [np.arange(10, 15), np.arange(20, 27)]
    rows = pack(iter(docs), 4, 10)
    assert rows.tolist() == [[10, 11, 12, 13, 14], [14, 20, 21, 22, 23]]  # 12 tokens: two rows of 4 + 1
    assert pack(iter(docs), 4, 1).tolist() == [[10, 11, 12, 13, 14]]
    assert pack(iter([]), 4, 3).shape == (0, 5)
    with pytest.raises(ValueError, match="--input"):
        inspect(InspectConfig(tokenizer_model=str(tiny_tokenizer("bpe"))), io.StringIO())
    spec = importlib.util.spec_from_file_location("inspect_batch_tool", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    # auto counts from --input when there is no --dataset
    assert tool.main(["--tokenizer-model", str(tiny_tokenizer("bpe")), "--input", str(corpus_jsonl()),
                      "--separation", "auto", "--max-sequences", "1"]) == 0
    capsys.readouterr()
    assert tool.main(["--tokenizer-model", str(tmp_path / "missing.model"), "--input", str(corpus_jsonl())]) == 1
    assert "error:" in capsys.readouterr().err
