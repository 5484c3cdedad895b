"""The tokenizer as megatron-core takes it: its base class, cache identity, pickling by name."""

import json
import pickle

import numpy as np
import pytest

from megatron_t2c.tokenizer.megatron import MegatronTokenizerAdapter
from helpers.t2c_data import tiny_tokenizer


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def tok(request):
    return MegatronTokenizerAdapter(tiny_tokenizer(request.param))


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
