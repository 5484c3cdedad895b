"""Which base-vocabulary tokens get a separate code row (embedding/output space) under MRPT.

The tokenizer is never changed: a separated token keeps its base id as input and label; only its code
occurrences use a second row.  Special ids (below :data:`~megatron_t2c.mrpt.modality.NUM_SPECIAL`: markers,
whitespace markers, raw ``\\n \\t \\r``, pad/unk/bos/eos) are never separated.

=========  ================================================================================================
mode       separated ids
=========  ================================================================================================
none       none (MAPT-style shared rows)
full       every ordinary id, ``id >= 15`` -- the byte-fallback pieces 15-270 included: they are text (the
           bytes of rare characters) and occur in code and docstrings like any other piece
partial    pieces that are a word of the PES list (:func:`grammar_words`), with or without a word-boundary
           mark (SentencePiece's ``▁`` U+2581, byte-level BPE's ``Ġ`` U+0120): ``return``, ``▁return``,
           ``(``, ``▁len``, ``split`` ...
auto       the ``k`` ids whose use differs most between docstrings and code (:func:`usage_scores`); the
           counts come from the caller (``megatron_t2c.data.modality_usage`` counts a dataset)
=========  ================================================================================================

The PES list is a file shipped beside this module (:data:`PES_TOKENS_FILE`, one word per line), the same
whatever Python runs: every word of the paper's release ``source/python_tokens.txt`` (in its order), then
the Python 3 keywords and soft keywords, the builtin functions, types and constants (not the exception
classes), the operators and delimiters, and the public methods of ``str``, ``list`` and ``dict``.
"""

from __future__ import annotations

import os
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from .modality import CODE, DOCSTRING, NUM_SPECIAL, modality_ids

MODES = ("none", "partial", "full", "auto")
#: SentencePiece's word-boundary mark.
SPACE_MARK = "\u2581"
#: Byte-level BPE's (GPT-2, GPT-Neo) word-boundary mark.
BPE_SPACE_MARK = "\u0120"
#: The pinned PES word list shipped with the package.
PES_TOKENS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "python_tokens.txt")


def read_token_list(path: str | os.PathLike) -> tuple[str, ...]:
    """The words of a token-list file, one per line (surrounding whitespace stripped, blank lines skipped,
    repeats kept once, first occurrence first)."""
    with open(path, encoding="utf-8") as fh:
        words = [line.strip() for line in fh]
    return tuple(dict.fromkeys(w for w in words if w))


def grammar_words(path: Optional[str | os.PathLike] = None) -> frozenset[str]:
    """The PES words: the list in ``path`` (default: the pinned :data:`PES_TOKENS_FILE`)."""
    return frozenset(read_token_list(path or PES_TOKENS_FILE))


def _is_grammar_piece(piece: str, words: frozenset[str]) -> bool:
    if piece in words:
        return True
    for mark in (SPACE_MARK, BPE_SPACE_MARK):
        if piece.startswith(mark) and piece[len(mark):] in words:
            return True
    return False


def usage_scores(doc_counts: np.ndarray, code_counts: np.ndarray, *, alpha: float = 1.0) -> np.ndarray:
    """How differently each id is used in docstrings and in code: its term of the Jeffreys divergence.

    With add-``alpha`` smoothed unigram distributions ``p_code`` and ``p_doc`` over the vocabulary, the
    score of id ``i`` is ``(p_code[i] - p_doc[i]) * log(p_code[i] / p_doc[i])`` -- non-negative, the id's
    share of the symmetric KL divergence ``KL(code||doc) + KL(doc||code)``: large for frequent tokens
    whose frequency differs a lot between the two modalities (both directions).
    """
    doc = np.asarray(doc_counts, dtype=np.float64) + alpha
    code = np.asarray(code_counts, dtype=np.float64) + alpha
    p_doc, p_code = doc / doc.sum(), code / code.sum()
    return (p_code - p_doc) * np.log(p_code / p_doc)


def separated_token_ids(mode: str, pieces: Sequence[str], *, k: int | None = None, doc_counts=None,
                        code_counts=None, min_count: int = 5, alpha: float = 1.0,
                        words: Optional[Iterable[str]] = None) -> list[int]:
    """Sorted base-vocabulary ids that get a code row; ``pieces[i]`` is the piece of id ``i``.

    ``partial`` separates the pieces of ``words`` (default: :func:`grammar_words`, the pinned list).

    ``auto`` needs ``k`` and the usage counts (:func:`count_modality_usage`, arrays of ``len(pieces)``;
    ``megatron_t2c.data.modality_usage.count_dataset_usage`` counts an indexed dataset):
    among ordinary ids seen at least ``min_count`` times in both modalities together, the ``k`` with the
    highest :func:`usage_scores` (ties: lower id first) -- fewer when fewer qualify.  Deterministic.
    """
    if mode not in MODES:
        raise ValueError(f"unknown separation {mode!r}; choose from {', '.join(MODES)}")
    vocab_size = len(pieces)
    if mode == "none":
        return []
    if mode == "full":
        return list(range(NUM_SPECIAL, vocab_size))
    if mode == "partial":
        chosen = grammar_words() if words is None else frozenset(words)
        return [i for i in range(NUM_SPECIAL, vocab_size) if _is_grammar_piece(pieces[i], chosen)]
    if k is None or k < 0 or doc_counts is None or code_counts is None:
        raise ValueError("separation 'auto' needs k >= 0 and doc_counts and code_counts")
    doc_counts, code_counts = np.asarray(doc_counts), np.asarray(code_counts)
    if doc_counts.shape != (vocab_size,) or code_counts.shape != (vocab_size,):
        raise ValueError(f"counts must have one entry per piece ({vocab_size})")
    scores = usage_scores(doc_counts, code_counts, alpha=alpha)
    candidates = np.arange(vocab_size)
    candidates = candidates[(candidates >= NUM_SPECIAL) & (doc_counts + code_counts >= min_count)]
    order = np.lexsort((candidates, -scores[candidates]))  # highest score first, then lowest id
    return sorted(int(i) for i in candidates[order[:k]])


def count_modality_usage(token_arrays: Iterable[np.ndarray], fmt: str, vocab_size: int,
                         batch_tokens: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """How often each id occurs as a docstring token and as a code token: ``(doc_counts, code_counts)``.

    Each array is taken on its own (a document, a packed row or a generation: its modality is
    :func:`~megatron_t2c.mrpt.modality.modality_ids` of that array); arrays are padded into 2-D batches of
    about ``batch_tokens`` ids for speed, which does not change the result (padding is no marker).
    """
    doc_counts = np.zeros(vocab_size, dtype=np.int64)
    code_counts = np.zeros(vocab_size, dtype=np.int64)
    batch: list[np.ndarray] = []
    longest = 0

    def flush() -> None:
        rows = torch.zeros(len(batch), longest, dtype=torch.long)  # pad (0) is not a marker
        lengths = torch.tensor([len(a) for a in batch])
        for i, array in enumerate(batch):
            rows[i, :len(array)] = torch.from_numpy(np.asarray(array, dtype=np.int64))
        valid = torch.arange(longest)[None, :] < lengths[:, None]
        modality = modality_ids(rows, fmt)
        for counts, wanted in ((doc_counts, DOCSTRING), (code_counts, CODE)):
            ids = rows[valid & (modality == wanted)]
            counts += torch.bincount(ids, minlength=vocab_size).numpy()[:vocab_size]

    for array in token_arrays:
        if len(array) == 0:
            continue
        if batch and max(longest, len(array)) * (len(batch) + 1) > batch_tokens:
            flush()
            batch, longest = [], 0
        batch.append(array)
        longest = max(longest, len(array))
    if batch:
        flush()
    return doc_counts, code_counts


def describe(ids: Sequence[int], pieces: Sequence[str]) -> str:
    """A printable list of separated ids: a count line, then ``id<TAB>piece`` (``repr`` of the piece)."""
    lines = [f"{len(ids)} separated token(s)"]
    lines += [f"{i}\t{pieces[i]!r}" for i in ids]
    return "\n".join(lines)
