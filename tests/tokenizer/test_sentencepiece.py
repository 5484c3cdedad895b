"""The runtime SentencePiece tokenizer: fixed ids, exact round trips, markers, the word cache."""

import numpy as np
import pytest
import sentencepiece as spm

from megatron_t2c.mrpt import formats as F
from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.tokenizer.sentencepiece import T2CTokenizerCore
from helpers.t2c_data import stdlib_records, tiny_tokenizer


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def tok(request):
    return T2CTokenizerCore(tiny_tokenizer(request.param))


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


def test_rejects_a_model_with_other_ids(tmp_path):
    writer_path = tmp_path / "plain.model"
    texts = [F.sample_text(s) for s in _samples("pangu")]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(writer_path.with_suffix("")),
                                   vocab_size=600, minloglevel=2)
    with pytest.raises(ValueError, match="special ids differ"):
        T2CTokenizerCore(writer_path)


def test_word_cache_is_exact_and_bounded():
    bpe, unigram = T2CTokenizerCore(tiny_tokenizer("bpe")), T2CTokenizerCore(tiny_tokenizer("unigram"))
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
