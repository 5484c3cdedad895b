"""What both runtime tokenizers share (megatron_t2c/tokenizer/runtime_base.py), on each of them."""

from __future__ import annotations

import pytest

from megatron_t2c.mrpt import formats as F
from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.tokenizer.loading import open_tokenizer
from helpers.hf_tokenizers import tiny_hf_tokenizer
from helpers.t2c_data import tiny_tokenizer


@pytest.fixture(scope="module", params=["sentencepiece-bpe", "sentencepiece-unigram", "huggingface-bpe"])
def tok(request):
    kind, model = request.param.split("-")
    return open_tokenizer(str(tiny_hf_tokenizer() if kind == "huggingface" else tiny_tokenizer(model)))


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
        assert tok.tokenize(text).count(st.EOC_ID) > 1  # plain tokenize (prompts): marker text is a marker
