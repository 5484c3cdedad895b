"""Which tokens get a code row: grammar words, the none/partial/full/auto sets, usage counts, describe()."""

import keyword
import os
import subprocess
import sys

import numpy as np
import pytest

from megatron_t2c.mrpt import separation as S
from megatron_t2c.data.modality_usage import count_dataset_usage
from helpers.modality_data import documents, indexed_dataset, pieces, reference_modality

MARK = S.SPACE_MARK


#: The paper release's ``source/python_tokens.txt`` (huawei-noah/noah-research, NLP/text2code_mrpt), as published.
RELEASE_TOKENS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "release_python_tokens.txt")


def test_pes_list_is_the_pinned_file_and_holds_the_release_words():
    words = S.grammar_words()
    assert words == frozenset(S.read_token_list(S.PES_TOKENS_FILE))
    release = S.read_token_list(RELEASE_TOKENS)
    assert len(release) == 174 and set(release) <= words
    assert S.read_token_list(S.PES_TOKENS_FILE)[:len(release)] == release  # the release's words first, in order
    assert {"self", "close", "read", "readlines", "add", "assertEqual", "real"} <= words
    assert set(keyword.kwlist) <= words and {"match", "case", "_", "type"} <= words
    assert {"len", "print", "isinstance", "zip", "None", "True", "Ellipsis"} <= words
    assert {"(", ")", "[", ":", "**=", "->", "==", "...", "@", ":="} <= words
    assert {"split", "join", "strip", "append", "items", "get", "setdefault", "removeprefix"} <= words
    assert not {"ValueError", "Exception", "DeprecationWarning", "copyright", "the"} & words
    assert not any(w.startswith("__") and w.endswith("__") for w in words)


def test_pes_list_does_not_depend_on_the_running_python():
    """Another interpreter state (keywords, builtins) gives the same set: nothing is read from Python."""
    code = ("import builtins, keyword, json; keyword.kwlist.append('zz_kw'); keyword.softkwlist.clear(); "
            "builtins.zz_builtin = 1; "
            "from megatron_t2c.mrpt.separation import grammar_words; print(json.dumps(sorted(grammar_words())))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    import json

    assert frozenset(json.loads(out)) == S.grammar_words()
    source = open(S.__file__, encoding="utf-8").read()
    assert "import keyword" not in source and "import builtins" not in source


def test_separation_tokens_file_selects_the_list(tmp_path):
    vocab = pieces()
    release = S.separated_token_ids("partial", vocab, words=S.read_token_list(RELEASE_TOKENS))
    words = set(S.read_token_list(RELEASE_TOKENS))
    want = [i for i, p in enumerate(vocab) if i >= 15 and (p in words or (p[:1] in (MARK, "\u0120") and p[1:] in words))]
    assert release == want and release
    assert set(release) <= set(S.separated_token_ids("partial", vocab))
    own = tmp_path / "words.txt"
    own.write_text("return\n\n  len  \nreturn\n", encoding="utf-8")
    assert S.read_token_list(own) == ("return", "len")
    ids = S.separated_token_ids("partial", vocab, words=S.grammar_words(own))
    assert {vocab[i].lstrip(MARK) for i in ids} == {"return", "len"} & {p.lstrip(MARK) for p in vocab}
    bpe = ["<pad>"] * 15 + ["\u0120return", "return", "\u0120the"]
    assert S.separated_token_ids("partial", bpe, words=["return"]) == [15, 16]


def test_none_full_partial():
    vocab = pieces()
    assert S.separated_token_ids("none", vocab) == []
    full = S.separated_token_ids("full", vocab)
    assert full == list(range(15, len(vocab)))  # byte-fallback pieces (15-270) included
    partial = S.separated_token_ids("partial", vocab)
    assert partial == sorted(set(partial)) and min(partial) >= 15
    index = {p: i for i, p in enumerate(vocab)}
    wanted = ["def", "return", "len", "(", "split", "join", "self.", "if", "for", "in", "None", ")", ":"]
    present = [w for word in wanted for w in (word, MARK + word) if w in index]
    assert {MARK + "return", "(", MARK + "def", MARK + "if", MARK + "len"} <= set(present)
    for piece in present:
        if piece.lstrip(MARK) in S.grammar_words():
            assert index[piece] in partial, piece
    words = S.grammar_words()
    assert all(vocab[i] in words or (vocab[i].startswith(MARK) and vocab[i][1:] in words) for i in partial)
    assert index["self"] in partial and index.get(MARK + "the", -1) not in partial  # the release separates self
    assert not any(vocab[i].startswith("<0x") for i in partial)
    assert 50 < len(partial) < len(full) // 3


def test_unknown_mode_and_auto_arguments():
    with pytest.raises(ValueError, match="unknown separation"):
        S.separated_token_ids("half", pieces())
    with pytest.raises(ValueError, match="needs k"):
        S.separated_token_ids("auto", pieces(), k=10)
    with pytest.raises(ValueError, match="one entry per piece"):
        S.separated_token_ids("auto", pieces(), k=10, doc_counts=np.ones(3), code_counts=np.ones(3))


def _counts(fmt="pangu"):
    return S.count_modality_usage((ids for _, ids in documents(fmt, "all")), fmt, len(pieces()))


def test_counts_agree_with_a_loop_and_do_not_depend_on_batching():
    docs = [ids for _, ids in documents("pycodegpt", "all")]
    doc_counts, code_counts = S.count_modality_usage(docs, "pycodegpt", len(pieces()))
    ref_doc, ref_code = np.zeros_like(doc_counts), np.zeros_like(code_counts)
    for ids in docs:
        for t, m in zip(ids.tolist(), reference_modality(ids.tolist(), "pycodegpt")):
            (ref_doc if m == 1 else ref_code if m == 2 else np.zeros(len(pieces()), np.int64))[t] += 1
    assert np.array_equal(doc_counts, ref_doc) and np.array_equal(code_counts, ref_code)
    assert doc_counts[:15].sum() == code_counts[:15].sum() == 0  # specials are shared: never counted
    # arrays are counted on their own: cut mid-document rows count like the reference on each row
    rows = [docs[0][5:], docs[1][:7], docs[2]]
    small = S.count_modality_usage(rows, "pycodegpt", len(pieces()), batch_tokens=16)
    big = S.count_modality_usage(rows, "pycodegpt", len(pieces()))
    assert all(np.array_equal(u, v) for u, v in zip(small, big))
    mods = [np.array(reference_modality(r.tolist(), "pycodegpt")) for r in rows]
    assert small[1].sum() == sum((m == 2).sum() for m in mods)


def test_auto_picks_k_by_score_deterministically():
    doc_counts, code_counts = _counts()
    vocab = pieces()
    chosen = S.separated_token_ids("auto", vocab, k=40, doc_counts=doc_counts, code_counts=code_counts)
    assert len(chosen) == 40 and chosen == sorted(chosen) and min(chosen) >= 15
    assert chosen == S.separated_token_ids("auto", list(vocab), k=40, doc_counts=doc_counts.copy(),
                                           code_counts=code_counts.copy())
    scores = S.usage_scores(doc_counts, code_counts)
    eligible = [i for i in range(15, len(vocab)) if doc_counts[i] + code_counts[i] >= 5]
    threshold = min(scores[chosen])
    assert all(scores[i] <= threshold for i in eligible if i not in chosen)
    picked = {vocab[i] for i in chosen}
    assert {"(", MARK + "="} & picked and {MARK + "the", MARK + "of"} & picked  # both directions of use
    # a larger k keeps the smaller k's choice; a k past the eligible ids gives them all
    bigger = S.separated_token_ids("auto", vocab, k=80, doc_counts=doc_counts, code_counts=code_counts)
    assert set(chosen) <= set(bigger)
    rare = S.separated_token_ids("auto", vocab, k=10**6, doc_counts=doc_counts, code_counts=code_counts,
                                 min_count=50)
    assert rare == [i for i in range(15, len(vocab)) if doc_counts[i] + code_counts[i] >= 50]


def test_usage_scores_definition():
    doc, code = np.array([10, 0, 5, 100]), np.array([0, 10, 5, 100])
    scores = S.usage_scores(doc, code)
    p_doc, p_code = (doc + 1) / (doc + 1).sum(), (code + 1) / (code + 1).sum()
    assert np.allclose(scores, (p_code - p_doc) * np.log(p_code / p_doc))
    assert (scores >= 0).all() and scores[2] == scores[3] == 0 and np.isclose(scores[0], scores[1])


def test_dataset_counts_equal_document_counts():
    got = count_dataset_usage(indexed_dataset("pycodegpt"), "pycodegpt", len(pieces()), chunk_documents=100)
    want = _counts("pycodegpt")
    assert all(np.array_equal(u, v) for u, v in zip(got, want))


def test_describe():
    vocab = pieces()
    ids = S.separated_token_ids("partial", vocab)[:3]
    text = S.describe(ids, vocab)
    lines = text.split("\n")
    assert lines[0] == "3 separated token(s)"
    assert lines[1:] == [f"{i}\t{vocab[i]!r}" for i in ids]
    assert S.describe([], vocab) == "0 separated token(s)"
