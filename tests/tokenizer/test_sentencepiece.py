"""SentencePiece training and the runtime tokenizer (as megatron-core takes it): fixed ids, exact round trips, markers, determinism, the CLI."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from megatron_t2c.mrpt import formats as F
from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.utils.records import LineReport
from megatron_t2c.tokenizer.megatron import MegatronTokenizerAdapter
from megatron_t2c.tokenizer.sentencepiece import check_special_ids
from megatron_t2c.tokenizer.train import TrainerOptions, split_long, train_tokenizer
from helpers.t2c_data import corpus_jsonl, session_dir, stdlib_records, tiny_tokenizer, write_jsonl

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def tok(request):
    return MegatronTokenizerAdapter(tiny_tokenizer(request.param))


def _samples(fmt):
    return [F.format_record(r, fmt) for r in stdlib_records()]


def test_special_ids_fixed(tok):
    sp = spm.SentencePieceProcessor(model_file=tok.path)
    for piece, expected in st.IDS.items():
        assert sp.piece_to_id(piece) == expected and sp.id_to_piece(expected) == piece
    assert [sp.id_to_piece(i) for i in range(15, 17)] == ["<0x00>", "<0x01>"]
    assert tok.vocab_size == sp.get_piece_size() == 1500
    assert (tok.eod, tok.pad, tok.mask, tok.descr, tok.python, tok.sos) == (6, 0, 8, 4, 5, 7)
    assert (tok.new_line, tok.indent, tok.dedent) == (9, 10, 11)
    assert tok.special_ids == st.IDS and tok.vocab["[eoc]"] == 6 and tok.inv_vocab[5] == "[python]"


@pytest.mark.parametrize("fmt", F.FORMATS)
def test_round_trip_every_sample(tok, fmt):
    samples = _samples(fmt)
    texts = [F.sample_text(s) for s in samples]
    batch = tok.encode_samples(samples)
    for segments, text, ids in zip(samples, texts, batch):
        assert tok.detokenize(tok.tokenize(text)) == text
        assert tok.detokenize(ids) == text
        # no marker text inside these samples: segment-wise encoding equals encoding the joined text
        assert ids.tolist() == tok.encode_sample(segments) == tok.tokenize(text)
        assert ids[-1] == tok.eod and np.count_nonzero(ids == tok.eod) == 1
    assert any("\n" in t for t in texts)  # multi-line string literals keep their raw line breaks


def test_marker_text_inside_text_is_not_a_marker(tok):
    code = "def f(x): [new_line] [indent] return x['[eoc]'] + '[python]\\t[sos]' + eoc[MASK] [new_line] [dedent]"
    doc = "Mentions [descr], [python] and [eoc]; the marker [MASK] too."
    for fmt in F.FORMATS:
        segments = F.format_code(code, doc, fmt)
        text = F.sample_text(segments)
        ids = tok.encode_sample(segments)
        assert tok.detokenize(ids) == text
        format_ids = [i for i in ids if i in (st.DESCR_ID, st.PYTHON_ID, st.EOC_ID, st.SOS_ID, st.MASK_ID)]
        assert format_ids == [st.IDS[s.text] for s in segments if s.is_marker]
        assert ids.count(st.NEW_LINE_ID) == 2 and ids.count(st.INDENT_ID) == 1  # structural markers stay
        assert tok.encode_samples([segments])[0].tolist() == ids
        # plain tokenize is for prompts: there, marker text is a marker
        assert tok.tokenize(text).count(st.EOC_ID) > 1
        mixed = [_samples(fmt)[0], segments, _samples(fmt)[1], segments]
        tokens, lengths = tok.encode_samples_flat(mixed)
        assert tokens.tolist() == sum((tok.encode_sample(s) for s in mixed), [])
        assert lengths.tolist() == [len(tok.encode_sample(s)) for s in mixed]


def test_space_mark_round_trips(tok):
    text = "x = '\u2581 a\u2581\u2581b' [new_line] "
    segments = F.format_code(text, "Uses \u2581.", "pangu")
    ids = tok.encode_sample(segments)
    assert tok.detokenize(ids) == F.sample_text(segments)
    assert tok.detokenize(tok.tokenize(text)) == text
    assert tok.encode_samples([segments])[0].tolist() == ids


def test_unicode_and_raw_whitespace(tok):
    for text in ["caf\u00e9 \u4e2d\u6587 \U0001f600", "a\r\nb\tc\n  d", "  leading and trailing  ", "\x00\x7f"]:
        assert tok.detokenize(tok.tokenize(text)) == text
        assert tok.id_to_piece(tok.tokenize(text)[0]) != st.UNK


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
    tok = MegatronTokenizerAdapter(summary.model)
    for segments in _samples("pangu")[:100]:
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


def test_megatron_tokenizer_interface(tok):
    from megatron.core.tokenizers import MegatronTokenizerBase

    from megatron_t2c.tokenizer.sentencepiece import load_tokenizer

    assert isinstance(tok, MegatronTokenizerBase)
    assert tok.unique_identifiers["tokenizer_path"] == tok.path
    json.dumps(tok.unique_identifiers)
    load_tokenizer(tok.path)  # loading another tokenizer must not orphan this one's class (pickle by name)
    clone = pickle.loads(pickle.dumps(tok))
    assert type(clone) is type(tok) and clone.tokenize("[descr] x [python]") == tok.tokenize("[descr] x [python]")
    assert tok.detokenize(np.array(tok.tokenize("abc def"), dtype=np.uint16)) == "abc def"
    with pytest.raises(NotImplementedError):
        tok.apply_chat_template([])


def test_rejects_a_model_with_other_ids(tmp_path):
    writer_path = tmp_path / "plain.model"
    texts = [F.sample_text(s) for s in _samples("pangu")]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(writer_path.with_suffix("")),
                                   vocab_size=600, minloglevel=2)
    with pytest.raises(ValueError, match="special ids differ"):
        MegatronTokenizerAdapter(writer_path)


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
    tok = MegatronTokenizerAdapter(tmp_path / "cli.model")
    segments = F.format_record(stdlib_records()[0], "pycodegpt")
    assert tok.detokenize(tok.encode_sample(segments)) == F.sample_text(segments)
    bad = _run("--input", tmp_path / "missing.jsonl", "--output-prefix", tmp_path / "m")
    assert bad.returncode == 1 and "no such file" in bad.stderr
    assert session_dir().exists()


def test_word_cache_is_exact_and_bounded():
    bpe, unigram = MegatronTokenizerAdapter(tiny_tokenizer("bpe")), MegatronTokenizerAdapter(tiny_tokenizer("unigram"))
    assert bpe.words_are_independent and not unigram.words_are_independent  # unigram is encoded whole
    texts = ["", " ", "a  b ", "  lead", "trail  ", "x\n\ty [new_line] [indent]", "def f(): [new_line]"]
    texts += [F.sample_text(s) for s in _samples("pycodegpt")[:50]]
    bpe.word_cache_size = 64  # forces the cache to be emptied between batches
    for start in range(0, len(texts), 10):
        batch = texts[start:start + 10]
        tokens, lengths = bpe.encode_batch_flat(batch)
        assert tokens.dtype == np.int32 and lengths.tolist() == [len(bpe.tokenize(t)) for t in batch]
        assert [row.tolist() for row in bpe.encode_batch(batch)] == [bpe.tokenize(t) for t in batch]
    distinct = {w for t in texts for w in t.split(" ")}
    assert len(bpe._words) < len(distinct)  # emptied on the way
    assert bpe.encode_batch([]) == [] and bpe.encode_samples([]) == []
