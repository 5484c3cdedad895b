"""Real token streams for the modality, objective, separation and inspector tests, and slow references.

Documents are the stdlib fixture records (:func:`t2c_data.stdlib_records`) formatted and encoded with the
tiny tokenizer, exactly as preprocessing writes them; packed rows cut their concatenation the way
megatron-core's ``GPTDataset`` does (``row i = stream[i*S : i*S + S + 1]``).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.mrpt.formats import format_record, included
from megatron_t2c.tokenizer.sentencepiece import T2CTokenizerCore
from helpers.t2c_data import stdlib_records, tiny_tokenizer

SHARED, DOCSTRING, CODE = 0, 1, 2


@functools.lru_cache(maxsize=None)
def tokenizer() -> T2CTokenizerCore:
    return T2CTokenizerCore(tiny_tokenizer("bpe"))


@functools.lru_cache(maxsize=None)
def pieces() -> tuple[str, ...]:
    tok = tokenizer()
    return tuple(tok.id_to_piece(i) for i in range(tok.vocab_size))


@functools.lru_cache(maxsize=None)
def documents(fmt: str, include: str = "all") -> tuple[tuple[dict, np.ndarray], ...]:
    """(record, ids) of every kept fixture record in ``fmt``."""
    tok = tokenizer()
    return tuple((r, np.asarray(tok.encode_sample(format_record(r, fmt)), dtype=np.int64))
                 for r in stdlib_records() if included(r, include))


def stream(fmt: str, include: str = "all") -> np.ndarray:
    return np.concatenate([ids for _, ids in documents(fmt, include)])


def packed(fmt: str, seq_length: int, include: str = "all", max_rows: int | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``(tokens, labels, stream)``: GPTDataset-style rows ``[n, seq_length]`` of the concatenated documents."""
    ids = stream(fmt, include)
    n = (len(ids) - 1) // seq_length
    if max_rows is not None:
        n = min(n, max_rows)
    rows = torch.from_numpy(np.stack([ids[i * seq_length:i * seq_length + seq_length + 1] for i in range(n)]))
    return rows[:, :-1], rows[:, 1:], ids


# The documented rules, written out as plainly as possible (a loop over tokens): the reference for the
# vectorised code.
_AFTER = {"pangu": {st.DESCR_ID: DOCSTRING, st.PYTHON_ID: CODE, st.EOC_ID: SHARED},
          "pycodegpt": {st.SOS_ID: CODE, st.DESCR_ID: DOCSTRING, st.PYTHON_ID: CODE, st.EOC_ID: SHARED}}
_BEFORE = {"pangu": {st.DESCR_ID: SHARED, st.PYTHON_ID: DOCSTRING, st.EOC_ID: CODE},
           "pycodegpt": {st.SOS_ID: SHARED, st.DESCR_ID: CODE, st.PYTHON_ID: DOCSTRING, st.EOC_ID: CODE}}


def reference_segments(row: list[int], fmt: str) -> list[int]:
    """Segment after each token, by walking the row."""
    first = next((t for t in row if t in _AFTER[fmt]), None)
    state = CODE if first is None else _BEFORE[fmt][first]
    out = []
    for t in row:
        state = _AFTER[fmt].get(t, state)
        out.append(state)
    return out


def reference_modality(row: list[int], fmt: str) -> list[int]:
    """Modality of each token, by walking the row: its segment, specials shared."""
    return [SHARED if t < 15 else s for t, s in zip(row, reference_segments(row, fmt))]


@functools.lru_cache(maxsize=None)
def indexed_dataset(fmt: str = "pycodegpt") -> str:
    """Prefix of a megatron indexed dataset of every fixture record (none dropped for length), in order."""
    from megatron_t2c.data import preprocess
    from helpers.t2c_data import corpus_jsonl, session_dir

    prefix = str(session_dir() / f"dataset-{fmt}")
    preprocess.preprocess(preprocess.PreprocessConfig(
        input=str(corpus_jsonl()), tokenizer_model=str(tiny_tokenizer("bpe")), output_prefix=prefix, format=fmt,
        include="all", max_seq_length=10**6, progress=False), log=None)
    return prefix
