"""Modality of tokens from the format markers: hand-built rows, real samples, packed rows, batches, devices."""

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from megatron_t2c.mrpt import modality as M
from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.mrpt.formats import clean_docstring, record_code
from megatron_t2c.mrpt.normalise import split_signature
from helpers.modality_data import documents, packed, reference_modality, tokenizer

S, D, C = M.SHARED, M.DOCSTRING, M.CODE
DESCR, PY, EOC, SOS, NL, IND, DED = (st.DESCR_ID, st.PYTHON_ID, st.EOC_ID, st.SOS_ID, st.NEW_LINE_ID,
                                     st.INDENT_ID, st.DEDENT_ID)
a, b, c, x, y, z = 300, 301, 302, 400, 401, 402  # ordinary ids


def _mod(row, fmt):
    return M.modality_ids(torch.tensor(row), fmt).tolist()


def test_ids_agree_with_special_tokens():
    """modality.py inlines its ids (it must stay self-contained for the HF export)."""
    assert (M.DESCR_ID, M.PYTHON_ID, M.EOC_ID, M.SOS_ID) == (st.DESCR_ID, st.PYTHON_ID, st.EOC_ID, st.SOS_ID)
    assert M.NUM_SPECIAL == st.FIRST_USER_ID + len(st.USER_DEFINED) == 15
    assert max(st.IDS.values()) == M.NUM_SPECIAL - 1
    assert M.FORMATS == ("pangu", "pycodegpt")


def test_module_imports_only_torch():
    source = Path(M.__file__).read_text()
    imports = {n.names[0].name if isinstance(n, ast.Import) else n.module
               for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Import, ast.ImportFrom))}
    assert imports == {"__future__", "typing", "torch"}


def test_pangu_hand_built():
    row = [DESCR, a, b, PY, x, NL, IND, y, DED, 12, z, EOC, PY, x, EOC]
    assert _mod(row, "pangu") == [S, D, D, S, C, S, S, C, S, S, C, S, S, C, S]
    assert M.segment_ids(torch.tensor(row), "pangu").tolist() == [D, D, D, C, C, C, C, C, C, C, C, S, C, C, S]


def test_pycodegpt_hand_built():
    row = [SOS, x, y, DESCR, a, b, PY, z, NL, x, EOC, SOS, y, PY, z, EOC]
    assert _mod(row, "pycodegpt") == [S, C, C, S, D, D, S, C, S, C, S, S, C, S, C, S]
    # [sos] is no marker in PanGu: before the first [descr] everything is outside
    assert _mod(row, "pangu")[:5] == [S, S, S, S, D]
    assert _mod([EOC, SOS, x, DESCR, a], "pangu") == [S, S, S, S, D]


@pytest.mark.parametrize("fmt,row,expected", [
    # PanGu: the first marker of the row decides the state of the tokens before it
    ("pangu", [a, b, PY, x, EOC], [D, D, S, C, S]),
    ("pangu", [x, NL, y, EOC, DESCR, a], [C, S, C, S, S, D]),
    ("pangu", [x, y, z], [C, C, C]),  # no marker: code
    ("pangu", [a, DESCR, b], [S, S, D]),  # nothing precedes [descr] in a well-formed stream
    # PyCodeGPT
    ("pycodegpt", [x, y, DESCR, a, PY, z, EOC], [C, C, S, D, S, C, S]),  # mid-signature
    ("pycodegpt", [a, b, PY, z, EOC], [D, D, S, C, S]),  # mid-docstring (documented choice)
    ("pycodegpt", [z, EOC, SOS, x], [C, S, S, C]),
    ("pycodegpt", [a, SOS, x], [S, S, C]),
    ("pycodegpt", [x], [C]),
    ("pycodegpt", [NL], [S]),
])
def test_rows_starting_mid_document(fmt, row, expected):
    assert _mod(row, fmt) == expected == reference_modality(row, fmt)


def test_generation_prefix_is_code_after_python():
    tok = tokenizer()
    prompt = tok.tokenize("[descr] Add two numbers. [python]")
    generated = tok.tokenize("def add(a, b): [new_line] [indent] return a + b [new_line] [dedent] ")
    mods = _mod(prompt + generated, "pangu")
    assert all(m == (S if t < 15 else C) for t, m in zip(generated, mods[len(prompt):]))
    assert mods[1:len(prompt) - 1] == [D] * (len(prompt) - 2)
    # the state of each prefix of a generation is the state of that prefix in the whole
    full = torch.tensor(prompt + generated)
    for end in range(len(prompt), len(full) + 1):
        assert M.modality_ids(full[:end], "pangu").tolist() == mods[:end]


@pytest.mark.parametrize("fmt", ["pangu", "pycodegpt"])
def test_real_samples_split_into_their_segments(fmt):
    """Decoding a sample's docstring-modality and code-modality tokens gives back its docstring and code."""
    tok = tokenizer()
    n_doc = n_code_only = 0
    for record, ids in documents(fmt, "all"):
        ids_t = torch.from_numpy(ids)
        seg = M.segment_ids(ids_t, fmt)
        mod = M.modality_ids(ids_t, fmt)
        not_marker = ~torch.isin(ids_t, torch.tensor([DESCR, PY, EOC, SOS]))
        doc_text = tok.detokenize(ids[((seg == D) & not_marker).numpy()])
        code_text = tok.detokenize(ids[((seg == C) & not_marker).numpy()])
        docstring = clean_docstring(record["docstring"])
        assert doc_text.strip() == (docstring or "")
        code = record_code(record)
        if fmt == "pycodegpt":
            header, body = split_signature(code)
            assert re.sub(" +", " ", code_text.strip()) == re.sub(" +", " ", f"{header} {body}".strip())
        else:
            assert code_text.strip() == code.strip()
        assert ((mod == S) == (ids_t < 15)).all()  # exactly the specials are shared
        assert set(mod[ids_t >= 15].tolist()) <= {D, C}
        n_doc += docstring is not None
        n_code_only += docstring is None
    assert n_doc > 100 and n_code_only > 100


@pytest.mark.parametrize("fmt,include,seq_length", [
    ("pangu", "text-code", 37), ("pycodegpt", "text-code", 96), ("pangu", "code-only", 64),
    ("pycodegpt", "code-only", 37), ("pycodegpt", "all", 64)])
def test_packed_rows_agree_with_the_stream_and_the_reference(fmt, include, seq_length):
    """2-D packed rows (several documents, rows starting mid-document) against the slow loop and the stream.

    Where a row holds a marker, its modality is the stream's, except in the one documented ambiguity:
    a PyCodeGPT row starting inside a code-only sample's signature, before its [python], is taken for a
    docstring.
    """
    tokens, _, ids = packed(fmt, seq_length, include=include)
    got = M.modality_ids(tokens, fmt)
    assert got.shape == tokens.shape and got.dtype == torch.long
    whole = M.modality_ids(torch.from_numpy(ids), fmt)
    markers = torch.isin(tokens, torch.tensor([DESCR, PY, EOC, SOS]))
    n_mid = n_ambiguous = 0
    for i, row in enumerate(tokens.tolist()):
        assert got[i].tolist() == reference_modality(row, fmt)
        expected = whole[i * seq_length:(i + 1) * seq_length]
        if not markers[i].any():  # a row with no marker is taken for code (inside a long docstring or body)
            assert set(got[i][tokens[i] >= 15].tolist()) == {C}
        elif not torch.equal(got[i], expected):
            first = int(markers[i].nonzero()[0])
            assert fmt == "pycodegpt" and include != "text-code" and row[first] == PY
            assert torch.equal(got[i][first:], expected[first:])
            assert set(expected[:first].tolist()) == {C} and set(got[i][:first].tolist()) == {D}
            n_ambiguous += 1
        n_mid += row[0] not in (DESCR, SOS, PY)
    assert n_mid > len(tokens) // 2 and markers.sum(-1).ge(3).any()  # rows across document boundaries
    assert (~markers.any(-1)).any() or seq_length > 37  # and rows without any marker
    assert n_ambiguous < len(tokens) // 10


def test_leading_dims_dtypes_and_empty():
    tokens, _, _ = packed("pangu", 32, max_rows=12)
    flat = M.modality_ids(tokens, "pangu")
    assert torch.equal(M.modality_ids(tokens.reshape(3, 4, 32), "pangu"), flat.reshape(3, 4, 32))
    assert torch.equal(M.modality_ids(tokens.int(), "pangu"), flat)
    assert torch.equal(M.modality_ids(torch.from_numpy(tokens.numpy().astype(np.int16)), "pangu"), flat)
    assert M.modality_ids(torch.zeros(2, 0, dtype=torch.long), "pangu").shape == (2, 0)
    with pytest.raises(ValueError, match="unknown format"):
        M.modality_ids(tokens, "codegen")


def test_no_host_synchronisation():
    """Runs on the meta device, where any data-dependent host read would fail."""
    tokens = torch.empty(4, 64, dtype=torch.long, device="meta")
    for fmt in M.FORMATS:
        assert M.modality_ids(tokens, fmt).shape == (4, 64)
