"""Hugging Face tokenizer directories through the fixed special ids (megatron_t2c.tokenizer.huggingface)."""

import json
import pickle

import numpy as np
import pytest

from megatron_t2c.mrpt import formats as F
from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.tokenizer.huggingface import MARKERS, OFFSET, HFTokenizerCore, TokenizerLoadError
from megatron_t2c.tokenizer.loading import open_tokenizer, tokenizer_fingerprint, tokenizer_kind
from helpers.hf_tokenizers import EOT, tiny_hf_tokenizer, write_vocab_merges
from helpers.t2c_data import MODULES, stdlib_records, tiny_tokenizer

#: More stdlib modules, for about two thousand samples.
MORE_MODULES = MODULES + ("inspect", "dataclasses", "enum", "functools", "pathlib", "tarfile", "zipfile",
                          "typing", "ftplib", "pydoc", "difflib", "calendar", "ipaddress")


@pytest.fixture(scope="module")
def tok():
    return HFTokenizerCore(tiny_hf_tokenizer())


def _samples(fmt, modules=MODULES):
    return [F.format_record(r, fmt) for r in stdlib_records(modules)]


def test_ids_and_markers(tok):
    raw = json.loads((tiny_hf_tokenizer() / "tokenizer.json").read_text())
    n = len(raw["model"]["vocab"])
    assert tok.hf_vocab_size == tok.model_rows == n == 800 and tok.vocab_size == OFFSET + n
    assert tok.marker_hf_ids == {} and tok.word_boundary_mark == "\u0120"
    for m in MARKERS:
        assert tok.tokenize(m) == [st.IDS[m]] and tok.vocab[m] == st.IDS[m] and tok.id_to_piece(st.IDS[m]) == m
    assert tok.tokenize("x[eoc]y") == tok.tokenize("x") + [st.EOC_ID] + tok.tokenize("y")  # atomic, found inside
    assert tok.vocab[EOT] == OFFSET + raw["model"]["vocab"][EOT]
    piece = "\u0120return"
    if piece in raw["model"]["vocab"]:
        assert tok.vocab[piece] == OFFSET + raw["model"]["vocab"][piece]
    assert (tok.eod, tok.pad, tok.mask, tok.descr, tok.python, tok.sos) == (6, 0, 8, 4, 5, 7)
    assert tok.special_ids == st.IDS and tok.inv_vocab[5] == "[python]"
    text = "a\r\nb\tc\n  d [new_line] [indent] e"
    ids = tok.tokenize(text)
    assert not set(ids) & {0, 1, 2, 3, 12, 13, 14} and tok.detokenize(ids) == text
    assert tok.detokenize([0, 1, 2, 3, 12, 13, 14, tok.vocab_size + 5]) == ""  # ids without a token
    assert tok.id_to_piece(0) == st.PAD and tok.id_to_piece(12) == "\n"


@pytest.mark.parametrize("fmt", F.FORMATS)
def test_round_trip_stdlib_samples(tok, fmt):
    samples = _samples(fmt, MORE_MODULES)
    assert len(samples) > 1500
    texts = [F.sample_text(s) for s in samples]
    tokens, lengths = tok.encode_samples_flat(samples)
    rows = np.split(tokens, np.cumsum(lengths)[:-1])
    assert tokens.dtype == np.int32 and lengths.dtype == np.int64
    for segments, text, ids in zip(samples, texts, rows):
        assert tok.detokenize(ids) == text
        assert ids.tolist() == tok.encode_sample(segments)
        assert ids[-1] == tok.eod and np.count_nonzero(ids == tok.eod) == 1
    # several threads: the same ids
    parallel = HFTokenizerCore(tiny_hf_tokenizer(), num_threads=4)
    assert [r.tolist() for r in parallel.encode_batch(texts[:200])] == [tok.tokenize(t) for t in texts[:200]]
    assert tok.encode_batch([]) == [] and tok.encode_samples([]) == []


def test_canonical_save_load_pickle(tok, tmp_path):
    saved = tok.save(tmp_path / "canonical", model_rows=832)
    names = sorted(p.name for p in (tmp_path / "canonical").iterdir())
    assert names == ["hf_tokenizer.json", "t2c_tokenizer.json", "tokenizer.json"]
    sidecar = json.loads((tmp_path / "canonical" / "t2c_tokenizer.json").read_text())
    assert sidecar["kind"] == "huggingface" and sidecar["offset"] == OFFSET and sidecar["model_rows"] == 832
    assert sidecar["hf_vocab_size"] == 800 and sidecar["source"] == tok.path
    assert sidecar["hf_tokenizer_config"]["eos_token"] == EOT
    assert (tmp_path / "canonical" / "hf_tokenizer.json").read_text() == \
        (tiny_hf_tokenizer() / "tokenizer.json").read_text()
    again = HFTokenizerCore(saved)
    assert again.fingerprint() == tok.fingerprint() == tokenizer_fingerprint(saved) == tokenizer_fingerprint(
        tiny_hf_tokenizer())
    assert again.model_rows == 832 and again.vocab_size == OFFSET + 832
    texts = [F.sample_text(s) for s in _samples("pycodegpt")[:100]]
    assert [again.tokenize(t) for t in texts] == [tok.tokenize(t) for t in texts]
    # the canonical tokenizer.json is a plain tokenizers file with the internal ids
    from tokenizers import Tokenizer

    plain = Tokenizer.from_file(str(tmp_path / "canonical" / "tokenizer.json"))
    assert plain.encode(texts[0], add_special_tokens=False).ids == tok.tokenize(texts[0])
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.tokenize(texts[1]) == tok.tokenize(texts[1]) and clone.fingerprint() == tok.fingerprint()


def test_a_tokenizer_holding_the_markers(tok, tmp_path):
    """An exported tokenizer: markers are added tokens after the model's rows; they keep the fixed ids."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    hf_ids = {m: 800 + i for i, m in enumerate(MARKERS)}
    exported = tok.hf_tokenizer_json(hf_ids)
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(exported))
    for m, h in hf_ids.items():
        assert fast.convert_tokens_to_ids(m) == h and h in fast.encode(f"a {m} b", add_special_tokens=False)
    # at ids past unused model rows too
    far = {m: 900 + 2 * i for i, m in enumerate(MARKERS)}
    fast_far = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tok.hf_tokenizer_json(far)))
    assert [fast_far.convert_tokens_to_ids(m) for m in MARKERS] == list(far.values())
    assert far["[python]"] in fast_far.encode("x [python] y", add_special_tokens=False)

    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / "tokenizer.json").write_text(exported, encoding="utf-8")
    held = HFTokenizerCore(tmp_path / "exported")
    assert held.marker_hf_ids == hf_ids and held.hf_vocab_size == 808
    text = F.sample_text(_samples("pycodegpt")[3])
    ids = held.tokenize(text)
    assert ids == tok.tokenize(text) and held.detokenize(ids) == text
    assert held.to_hf_ids(ids).tolist() == fast.encode(text, add_special_tokens=False)
    assert held.from_hf_ids(held.to_hf_ids(ids)).tolist() == ids
    assert not any(OFFSET + h in ids for h in hf_ids.values())
    assert json.loads(held.hf_tokenizer_json(hf_ids)) == json.loads(exported)  # exporting again: the same


def test_hf_id_maps(tok):
    ids = np.array([4, 5, 6, 11, 15, 16, 814, 0, 12])
    hf = tok.to_hf_ids(ids)
    assert hf.tolist() == [-1, -1, -1, -1, 0, 1, 799, -1, -1]
    assert tok.from_hf_ids([0, 1, 799]).tolist() == [15, 16, 814]
    text = "def f ( x ) : [new_line] [indent] return x"
    ids = np.asarray(tok.tokenize(text))
    plain = ids[ids >= OFFSET]
    assert tok.from_hf_ids(tok.to_hf_ids(plain)).tolist() == plain.tolist()


def test_vocab_merges_directory(tok, tmp_path):
    pair = write_vocab_merges(tiny_hf_tokenizer(), tmp_path / "gpt2")
    assert sorted(p.name for p in pair.iterdir()) == ["merges.txt", "vocab.json"]
    loaded = open_tokenizer(pair)
    assert isinstance(loaded, HFTokenizerCore) and tokenizer_kind(pair) == "huggingface"
    texts = [F.sample_text(s) for s in _samples("pangu")[:100]]
    assert [loaded.tokenize(t) for t in texts] == [tok.tokenize(t) for t in texts]
    assert all(loaded.detokenize(loaded.tokenize(t)) == t for t in texts)


def test_loader_and_errors(tmp_path):
    from megatron_t2c.tokenizer.sentencepiece import T2CTokenizerCore

    assert isinstance(open_tokenizer(tiny_tokenizer("bpe")), T2CTokenizerCore)
    assert tokenizer_kind(tiny_tokenizer("bpe")) == "sentencepiece"
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerLoadError, match="not a SentencePiece model file nor a Hugging Face tokenizer "
                                                 r"directory \(tokenizer.json, or vocab.json \+ merges.txt\)") as err:
        open_tokenizer(tmp_path / "empty")
    assert "\n" not in str(err.value)
    with pytest.raises(TokenizerLoadError, match="no such file"):
        open_tokenizer(tmp_path / "missing")
    raw = json.loads((tiny_hf_tokenizer() / "tokenizer.json").read_text())
    raw["model"] = {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0]]}
    (tmp_path / "uni").mkdir()
    (tmp_path / "uni" / "tokenizer.json").write_text(json.dumps(raw))
    with pytest.raises(TokenizerLoadError, match="model type 'Unigram' is not supported"):
        open_tokenizer(tmp_path / "uni")


def test_megatron_adapter():
    from megatron_t2c.tokenizer.megatron import MegatronHFTokenizerAdapter
    from megatron_t2c.tokenizer.sentencepiece import load_tokenizer

    adapter = open_tokenizer(tiny_hf_tokenizer(), megatron=True)
    assert isinstance(adapter, MegatronHFTokenizerAdapter) and adapter.eod == st.EOD_ID
    assert adapter.vocab_size == OFFSET + 800 and "model_sha256" in adapter.unique_identifiers
    assert isinstance(load_tokenizer(tiny_hf_tokenizer()), MegatronHFTokenizerAdapter)
