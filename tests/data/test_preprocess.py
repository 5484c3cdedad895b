"""JSONL records to Megatron indexed datasets: content, order, accounting, workers, atomicity, the CLI."""

import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from megatron_t2c.mrpt import formats as F
from megatron_t2c.data import preprocess as P
from megatron_t2c.data.preprocess import run as preprocess_run
from megatron_t2c.data.preprocess.accounting import StrictError
from megatron_t2c.tokenizer.sentencepiece import T2CTokenizerCore
from helpers.t2c_data import corpus_jsonl, stdlib_records, tiny_tokenizer

REPO = Path(__file__).resolve().parents[2]

# (1-based line number in the bad corpus, raw line, reason)
BAD_LINES = [
    (4, b"not json {", "invalid_json"),
    (9, b"", "blank_line"),
    (15, b'{"code": "def f(): pass\\n", "docstring": 5}', "wrong_type:docstring"),
    (22, b'{"docstring": "Doc."}', "missing_field:code"),
    (30, b"[1, 2]", "not_an_object"),
    (41, b'{"code": "def f(:\\n  \\"\\"\\"x", "docstring": "Doc."}', "normalise_error"),
    (50, b'{"code": "   \\n", "docstring": "Doc."}', "empty_code"),
    (60, b'{"code": "def f(): pass\\n", "docstring": "lone \\ud800 surrogate"}', "invalid_text"),
    (70, b'{"code": "x = 1\\n", "docstring": "\xff\xfe"}', "invalid_utf8"),
    (80, b'{"code": "x = 1\\n", "docstring": null, "name": 3}', "wrong_type:name"),
]


@pytest.fixture(scope="module")
def model():
    return str(tiny_tokenizer("bpe"))


@pytest.fixture(scope="module")
def tok(model):
    return T2CTokenizerCore(model)


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
    """The fixture corpus with one bad line of every kind inserted; returns (path, {line: record})."""
    lines = [json.dumps(r).encode() for r in stdlib_records()]
    for line_no, raw, _ in BAD_LINES:
        lines.insert(line_no - 1, raw)
    path = tmp_path_factory.mktemp("bad") / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    bad = {n for n, _, _ in BAD_LINES}
    records = iter(stdlib_records())
    return path, {n: next(records) for n in range(1, len(lines) + 1) if n not in bad}


def _config(input_path, model, prefix, **kwargs):
    kwargs.setdefault("progress", False)
    return P.PreprocessConfig(input=str(input_path), tokenizer_model=model, output_prefix=str(prefix), **kwargs)


def _expected(tok, records_by_line, fmt="pangu", include="text-code", max_len=1024):
    """(line numbers, token lists) of the documents preprocessing should write."""
    out = []
    for line_no, record in sorted(records_by_line.items()):
        if F.included(record, include):
            ids = tok.encode_sample(F.format_record(record, fmt))
            if len(ids) <= max_len:
                out.append((line_no, ids))
    return out


def _read(prefix):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    return IndexedDataset(str(prefix))


@pytest.mark.parametrize("fmt,include", [("pangu", "text-code"), ("pycodegpt", "all"), ("pangu", "code-only")])
def test_documents_read_back_in_input_order(tmp_path, model, tok, fmt, include):
    records = dict(enumerate(stdlib_records(), 1))
    config = _config(corpus_jsonl(), model, tmp_path / "out", format=fmt, include=include,
                     index_map=str(tmp_path / "out.lines"), summary=str(tmp_path / "s.json"))
    summary = P.preprocess(config, log=None)
    assert sorted(os.listdir(tmp_path)) == ["out.bin", "out.idx", "out.lines", "s.json"]
    dataset = _read(tmp_path / "out")
    expected = _expected(tok, records, fmt, include)
    lines = [int(x) for x in (tmp_path / "out.lines").read_text().split()]
    assert lines == [n for n, _ in expected] and len(dataset) == len(expected) == summary["documents"]
    assert dataset.index.dtype == np.uint16 and summary["dtype"] == "uint16"
    assert dataset.document_indices.tolist() == list(range(len(dataset) + 1))  # one document per record
    for i, (line_no, ids) in enumerate(expected):
        doc = dataset[i]
        assert doc.tolist() == ids and doc[-1] == tok.eod
        assert tok.detokenize(doc) == F.sample_text(F.format_record(records[line_no], fmt))
    assert summary["tokens"] == sum(len(ids) for _, ids in expected) == len(np.concatenate([dataset[i] for i in range(len(dataset))]))
    assert summary["lines"] == len(records) == summary["documents"] + sum(summary["skipped"].values())
    assert json.loads((tmp_path / "s.json").read_text()) == summary
    assert summary["tokens_per_s"] > 0 and set(summary["seconds"]) == {"setup", "run"}


def test_bad_lines_are_counted_with_line_numbers(tmp_path, model, tok, bad_corpus):
    path, records = bad_corpus
    log = io.StringIO()
    summary = P.preprocess(_config(path, model, tmp_path / "out", include="all", index_map=str(tmp_path / "map"),
                                   show_bad=4), log=log)
    for _, _, reason in BAD_LINES:
        assert summary["skipped"][reason] == 1, reason
    assert summary["bad_lines"] == len(BAD_LINES)
    assert [(b["line"], b["reason"]) for b in summary["first_bad_lines"]] == [(n, r) for n, _, r in BAD_LINES[:4]]
    printed = log.getvalue().splitlines()
    assert printed[:4] == [f"{path}:{n}: {r}" + (f": {d}" if d else "")
                           for n, r, d in [(b["line"], b["reason"], b["detail"]) for b in summary["first_bad_lines"]]]
    assert printed[4] == f"... and {len(BAD_LINES) - 4} more bad lines (counted by reason in the summary)"
    assert summary["lines"] == len(records) + len(BAD_LINES)
    assert summary["lines"] == summary["documents"] + sum(summary["skipped"].values())
    expected = _expected(tok, records, include="all")
    assert [int(x) for x in (tmp_path / "map").read_text().split()] == [n for n, _ in expected]
    dataset = _read(tmp_path / "out")
    assert [dataset[i].tolist() for i in range(len(dataset))] == [ids for _, ids in expected]


def test_strict_stops_at_the_first_bad_line(tmp_path, model, bad_corpus):
    path, _ = bad_corpus
    (tmp_path / "out.bin").write_bytes(b"old bin")
    with pytest.raises(StrictError, match=r"^line 4: invalid_json: .*--strict"):
        P.preprocess(_config(path, model, tmp_path / "out", strict=True, workers=2, chunk_bytes=4096), log=None)
    assert sorted(os.listdir(tmp_path)) == ["out.bin"] and (tmp_path / "out.bin").read_bytes() == b"old bin"


def test_workers_give_identical_bytes(tmp_path, model, bad_corpus):
    path, _ = bad_corpus
    outputs = []
    for workers in (1, 2):
        prefix = tmp_path / f"w{workers}"
        summary = P.preprocess(_config(path, model, prefix, include="all", workers=workers, chunk_bytes=16384,
                                       index_map=f"{prefix}.lines"), log=None)
        outputs.append([Path(f"{prefix}{ext}").read_bytes() for ext in (".bin", ".idx", ".lines")])
        assert summary["documents"] > 300
    assert outputs[0] == outputs[1]


def test_max_seq_length_drops_and_counts(tmp_path, model, tok):
    records = dict(enumerate(stdlib_records(), 1))
    lengths = [len(ids) for _, ids in _expected(tok, records, include="all", max_len=10**9)]
    summary = P.preprocess(_config(corpus_jsonl(), model, tmp_path / "out", include="all", max_seq_length=128),
                           log=None)
    assert summary["skipped"] == {"too_long": sum(n > 128 for n in lengths)} and summary["skipped"]["too_long"] > 0
    dataset = _read(tmp_path / "out")
    assert len(dataset) == sum(n <= 128 for n in lengths) and dataset.sequence_lengths.max() <= 128


def _snapshot(directory):
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))}


@pytest.mark.parametrize("workers", [1, 2])
def test_failure_mid_write_leaves_previous_outputs(tmp_path, model, monkeypatch, workers):
    for name in ("out.bin", "out.idx", "out.lines"):
        (tmp_path / name).write_bytes(b"previous " + name.encode())
    before = _snapshot(tmp_path)
    real = preprocess_run.add_documents  # the single-process run's writer
    calls = []

    def failing(builder, tokens, lengths):
        calls.append(len(lengths))
        if len(calls) == 3:
            raise OSError("disk full (simulated)")
        real(builder, tokens, lengths)

    monkeypatch.setattr(preprocess_run, "add_documents", failing)
    with pytest.raises(OSError, match="simulated"):
        P.preprocess(_config(corpus_jsonl(), model, tmp_path / "out", include="all", workers=workers,
                             chunk_bytes=8192, index_map=str(tmp_path / "out.lines")), log=None)
    assert len(calls) == 3 and sum(calls[:2]) > 0
    assert _snapshot(tmp_path) == before  # untouched, and no temporary files left


def _cli(*args, **kwargs):
    return [sys.executable, str(REPO / "tools" / "preprocess_data.py"), *map(str, args)]


def test_sigterm_mid_run_leaves_nothing(tmp_path, model):
    """Kill a real run that is blocked half-way through its input (a FIFO), with workers."""
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    (tmp_path / "out.bin").write_bytes(b"previous")
    data = corpus_jsonl().read_bytes()
    proc = subprocess.Popen(_cli("--input", fifo, "--tokenizer-model", model, "--output-prefix", tmp_path / "out",
                                 "--include", "all", "--workers", 2, "--chunk-bytes", 4096),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        with open(fifo, "wb") as writer:  # opens once the tool opens its input
            writer.write(data[:len(data) * 2 // 3])
            writer.flush()
            deadline = time.monotonic() + 60
            while not any(name.startswith(".out.bin.") and (tmp_path / name).stat().st_size > 0
                          for name in os.listdir(tmp_path)):
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    except BrokenPipeError:
        pass
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "terminated; nothing written" in proc.stderr.read().decode()
    assert sorted(os.listdir(tmp_path)) == ["in.fifo", "out.bin"]
    assert (tmp_path / "out.bin").read_bytes() == b"previous"


def test_cli_help():
    result = subprocess.run(_cli("--help"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "example:" in result.stdout and "--index-map" in result.stdout


def test_cli_end_to_end(tmp_path, model, tok, bad_corpus):
    path, records = bad_corpus
    result = subprocess.run(_cli("--input", path, "--tokenizer-model", model, "--output-prefix", tmp_path / "d",
                                 "--format", "pycodegpt", "--workers", 2, "--summary", tmp_path / "d.json",
                                 "--index-map", tmp_path / "d.lines", "--max-seq-length", 512),
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert f"{path}:4: invalid_json" in result.stderr and f"{path}:22: missing_field:code" in result.stderr
    assert "documents" in result.stdout and "tokens/s" in result.stdout
    summary = json.loads((tmp_path / "d.json").read_text())
    assert summary["lines"] == summary["documents"] + sum(summary["skipped"].values()) == len(records) + len(BAD_LINES)
    expected = _expected(tok, records, fmt="pycodegpt", max_len=512)
    dataset = _read(tmp_path / "d")
    assert [int(x) for x in (tmp_path / "d.lines").read_text().split()] == [n for n, _ in expected]
    assert [dataset[i].tolist() for i in range(len(dataset))] == [ids for _, ids in expected]


def test_cli_strict_exit_status(tmp_path, model, bad_corpus, capsys):
    spec = importlib.util.spec_from_file_location("preprocess_cli", REPO / "tools" / "preprocess_data.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    path, _ = bad_corpus
    status = cli.main(["--input", str(path), "--tokenizer-model", model, "--output-prefix", str(tmp_path / "o"),
                       "--strict", "--no-progress"])
    assert status == 1 and "error: line 4: invalid_json" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
    assert cli.main(["--input", str(tmp_path / "nope.jsonl"), "--tokenizer-model", model,
                     "--output-prefix", str(tmp_path / "o")]) == 1


def test_gpt_dataset_reads_the_output(tmp_path, model, tok):
    """megatron-core's GPTDataset accepts the tokenizer and packs the documents with [eoc] as end of document."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    P.preprocess(_config(corpus_jsonl(), model, tmp_path / "gpt"), log=None)
    config = GPTDatasetConfig(random_seed=1, sequence_length=256, blend=([str(tmp_path / "gpt")], None),
                              split="100,0,0", tokenizer=tok, reset_position_ids=True, reset_attention_mask=True,
                              eod_mask_loss=False, path_to_cache=str(tmp_path / "cache"))
    train, _, _ = BlendedMegatronDatasetBuilder(GPTDataset, [16, None, None], lambda: True, config).build()
    sample = train[0]
    assert sample["tokens"].shape == (256,) and sample["attention_mask"].shape == (1, 256, 256)
    eod = (sample["tokens"] == tok.eod).nonzero().flatten()
    assert len(eod) >= 1 and sample["position_ids"][eod[0] + 1] == 0  # positions restart after [eoc]


def test_hf_tokenizer_directory(tmp_path):
    """--tokenizer-model DIR (a Hugging Face byte-level BPE): documents decode back to the samples."""
    from megatron_t2c.tokenizer.huggingface import HFTokenizerCore
    from helpers.hf_tokenizers import tiny_hf_tokenizer

    model = str(tiny_hf_tokenizer())
    tok = HFTokenizerCore(model)
    records = dict(enumerate(stdlib_records(), 1))
    config = _config(corpus_jsonl(), model, tmp_path / "out", format="pycodegpt", include="all", workers=2,
                     index_map=str(tmp_path / "out.lines"))
    summary = P.preprocess(config, log=None)
    dataset = _read(tmp_path / "out")
    expected = _expected(tok, records, "pycodegpt", "all")
    lines = [int(x) for x in (tmp_path / "out.lines").read_text().split()]
    assert lines == [n for n, _ in expected] and len(dataset) == len(expected) == summary["documents"] > 300
    assert dataset.index.dtype == np.uint16
    for i, (line_no, ids) in enumerate(expected):
        doc = dataset[i]
        assert doc.tolist() == ids and doc[-1] == tok.eod
        assert tok.detokenize(doc) == F.sample_text(F.format_record(records[line_no], "pycodegpt"))
    # a sharded run records the directory's tokenization fingerprint in its plan
    from megatron_t2c.data.preprocess.shards import _tokenizer_fingerprint

    assert _tokenizer_fingerprint(model)["sha256"] == tok.fingerprint()
