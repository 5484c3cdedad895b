"""SentencePiece training: determinism, vocabulary limits, long samples, bad lines, the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm

from megatron_t2c.mrpt import formats as F
from megatron_t2c.tokenizer.sentencepiece import T2CTokenizerCore, check_special_ids
from megatron_t2c.tokenizer.train import TrainerOptions, split_long, train_tokenizer
from megatron_t2c.utils.records import LineReport
from helpers.t2c_data import corpus_jsonl, session_dir, stdlib_records, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def test_same_input_and_seed_same_model(tmp_path):
    for model_type in ("bpe", "unigram"):
        a = train_tokenizer(corpus_jsonl(), tmp_path / f"a-{model_type}", vocab_size=1200, model_type=model_type)
        b = train_tokenizer(corpus_jsonl(), tmp_path / f"b-{model_type}", vocab_size=1200, model_type=model_type)
        assert Path(a.model).read_bytes() == Path(b.model).read_bytes() and a.sha256 == b.sha256
        assert Path(a.vocab).read_text() == Path(b.vocab).read_text()
        assert len(Path(a.vocab).read_text().splitlines()) == 1200


def test_vocabulary_larger_than_corpus(tmp_path):
    small = write_jsonl(tmp_path / "small.jsonl", stdlib_records()[:20])
    with pytest.raises(ValueError, match=r"larger than this corpus supports \(\d+ at most\)"):
        train_tokenizer(small, tmp_path / "big", vocab_size=60000)
    options = TrainerOptions(vocab_size=60000, hard_vocab_limit=False)
    summary = train_tokenizer(small, tmp_path / "soft", options=options)
    assert 271 < summary.vocab_size < 60000
    check_special_ids(spm.SentencePieceProcessor(model_file=summary.model))


def test_empty_corpus(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n{}\n")
    with pytest.raises(ValueError, match="no valid records"):
        train_tokenizer(empty, tmp_path / "x", vocab_size=500)


def test_long_samples_are_cut_for_training(tmp_path):
    text = " ".join(["word"] * 50 + ["x" * 300, "\u00e9" * 200])
    pieces = split_long(text, 128)
    assert all(len(p.encode()) <= 128 for p in pieces)
    assert "".join(pieces) == text and len(pieces) > 3
    # a limit below most samples' length still trains on all of them, and round trips hold
    summary = train_tokenizer(corpus_jsonl(), tmp_path / "short", options=TrainerOptions(
        vocab_size=1000, max_sentence_length=256))
    assert summary.sentences > 3 * summary.records
    tok = T2CTokenizerCore(summary.model)
    for segments in [F.format_record(r, "pangu") for r in stdlib_records()[:100]]:
        assert tok.detokenize(tok.encode_sample(segments)) == F.sample_text(segments)


def test_bad_lines_are_reported(tmp_path):
    records = stdlib_records()[:50]
    path = write_jsonl(tmp_path / "bad.jsonl", records, {3: "not json", 10: "", 20: '{"docstring": null}'})
    report = LineReport(stream=None)
    summary = train_tokenizer(path, tmp_path / "t", vocab_size=600, report=report)
    assert summary.lines == 53 and summary.records == 50
    assert report.first_bad == [(4, "invalid_json", report.first_bad[0][2]), (11, "blank_line", ""),
                                (21, "missing_field:code", "no 'code' field")]
    assert summary.skipped == {"invalid_json": 1, "blank_line": 1, "missing_field:code": 1}


def _run(*args):
    return subprocess.run([sys.executable, str(REPO / "tools" / "train_tokenizer.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_cli_help():
    result = _run("--help")
    assert result.returncode == 0 and "example:" in result.stdout and "--vocab-size" in result.stdout


def test_cli_end_to_end(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", stdlib_records(), {5: "{broken"})
    result = _run("--input", path, "--output-prefix", tmp_path / "cli", "--vocab-size", 1000, "--model-type",
                  "unigram", "--format", "pycodegpt", "--seed", 7, "--summary", tmp_path / "s.json")
    assert result.returncode == 0, result.stderr
    assert f"{path}:6: invalid_json" in result.stderr
    assert "1000 pieces" in result.stdout and "invalid_json=1" in result.stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["records"] == len(stdlib_records()) and summary["model_type"] == "unigram"
    tok = T2CTokenizerCore(tmp_path / "cli.model")
    segments = F.format_record(stdlib_records()[0], "pycodegpt")
    assert tok.detokenize(tok.encode_sample(segments)) == F.sample_text(segments)
    bad = _run("--input", tmp_path / "missing.jsonl", "--output-prefix", tmp_path / "m")
    assert bad.returncode == 1 and "no such file" in bad.stderr
    assert session_dir().exists()
