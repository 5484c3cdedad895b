"""The runtime SentencePiece tokenizer: fixed special ids, exact round trips, fast batched encoding.

Ids (fixed for every model trained here, whatever its vocabulary size; see
:mod:`megatron_t2c.mrpt.special_tokens`)::

    0 <pad>   1 <unk>   2 <s>   3 </s>
    4 [descr]   5 [python]   6 [eoc] (= eod)   7 [sos]   8 [MASK]
    9 [new_line]   10 [indent]   11 [dedent]   12 "\\n"   13 "\\t"   14 "\\r"
    15-270 byte-fallback pieces <0x00> ... <0xFF>
    271-  learned pieces

:class:`T2CTokenizerCore` loads a model (trained by :mod:`megatron_t2c.tokenizer.train`).  Besides plain
:meth:`~T2CTokenizerCore.tokenize` (marker text becomes marker ids: the way to encode a prompt such as
``"[descr] Add two numbers. [python]"``) it encodes format samples segment by segment
(:meth:`~T2CTokenizerCore.encode_sample`): there, marker text inside docstrings and code is tokenised as
ordinary text and never becomes a format-marker id.  :func:`load_tokenizer` returns it as the object
megatron-core consumes (:class:`megatron_t2c.tokenizer.megatron.MegatronTokenizerAdapter`).

Batched encoding (:meth:`~T2CTokenizerCore.encode_batch`, used by preprocessing) of a BPE model caches the
ids of every distinct space-separated word: BPE never merges across a space here (``split_by_whitespace``,
checked on every model loaded), so the ids are exactly SentencePiece's, at a fraction of the cost on code,
which repeats its words a lot.

One limitation of SentencePiece is worked around: the character ``▁`` (U+2581) is its escaped space, so
ordinary encoding would decode it as a space; the tokenizer writes it as its three byte-fallback pieces.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from itertools import chain, repeat
from pathlib import Path
from typing import Iterable

import numpy as np
import sentencepiece as spm

from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.tokenizer.runtime_base import RuntimeTokenizerBase

__all__ = ["T2CTokenizerCore", "check_special_ids", "load_tokenizer"]

#: SentencePiece's escaped space; a literal one in text is written as byte pieces.
_SPACE_MARK = "\u2581"
_SPACE_MARK_BYTES = tuple(f"<0x{b:02X}>" for b in _SPACE_MARK.encode("utf-8"))
_BPE = 2  # sentencepiece_model.proto's TrainerSpec.ModelType
#: Piece types the special pieces must have (sentencepiece_model.proto's ModelProto.SentencePiece.Type).
_UNKNOWN, _CONTROL, _USER_DEFINED = 2, 3, 4


def check_special_ids(processor: spm.SentencePieceProcessor, proto=None) -> None:
    """Raise ``ValueError`` unless every special piece has its fixed id (and the right piece type)."""
    expected_type = {st.UNK: _UNKNOWN, st.PAD: _CONTROL, st.BOS: _CONTROL, st.EOS: _CONTROL}
    proto = proto if proto is not None else _model_proto(processor)
    problems = []
    for piece, wanted in st.IDS.items():
        got = processor.piece_to_id(piece)
        kind = proto.pieces[wanted].type if wanted < len(proto.pieces) else None
        if got != wanted or kind != expected_type.get(piece, _USER_DEFINED):
            problems.append(f"{piece!r}: id {got} (type {kind}), expected {wanted}")
    if problems:
        raise ValueError("tokenizer special ids differ from megatron_t2c.mrpt.special_tokens: " + "; ".join(problems))


def _model_proto(processor: spm.SentencePieceProcessor):
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(processor.serialized_model_proto())
    return proto


class _WordTable:
    """Token ids of words, all in one array: row ``r`` is ``flat[start[r]:start[r] + length[r]]``.

    ``after_space`` maps a word to the row of ``" " + word``'s ids, ``first`` a text's first word (no
    space before it) to the row of its own ids.  Growing arrays double their capacity.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.after_space: dict[str, int] = {}
        self.first: dict[str, int] = {}
        self.flat = np.zeros(1 << 16, np.int32)
        self.start = np.zeros(1 << 12, np.int64)
        self.length = np.zeros(1 << 12, np.int64)
        self.n_ids = 0
        self.n_rows = 0

    def __len__(self) -> int:
        return self.n_rows

    def add(self, index: dict[str, int], words: list[str], id_lists: list[list[int]]) -> None:
        """Add one row per word from a list of id lists."""
        lengths = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
        ids = np.fromiter(chain.from_iterable(id_lists), dtype=np.int32, count=int(lengths.sum()))
        self.add_rows(index, words, ids, np.cumsum(lengths) - lengths)

    def add_rows(self, index: dict[str, int], words: list[str], ids: np.ndarray, starts: np.ndarray) -> None:
        """Add one row per word: word ``k``'s ids are ``ids[starts[k]:starts[k + 1]]`` (the last to the end)."""
        n, m = len(words), len(ids)
        self.flat = _ensure(self.flat, self.n_ids + m)
        self.start = _ensure(self.start, self.n_rows + n)
        self.length = _ensure(self.length, self.n_rows + n)
        self.flat[self.n_ids:self.n_ids + m] = ids
        self.start[self.n_rows:self.n_rows + n] = starts + self.n_ids
        self.length[self.n_rows:self.n_rows + n] = np.diff(starts, append=m)
        index.update(zip(words, range(self.n_rows, self.n_rows + n)))
        self.n_ids += m
        self.n_rows += n

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ids of ``rows`` in a row, and each row's length."""
        lengths = self.length[rows]
        total = int(lengths.sum())
        ends = np.cumsum(lengths)
        positions = np.arange(total, dtype=np.int64) + np.repeat(self.start[rows] - (ends - lengths), lengths)
        return self.flat[positions], lengths


def _ensure(array: np.ndarray, size: int) -> np.ndarray:
    """``array``, or a copy with at least twice the room when it holds fewer than ``size`` items."""
    if size <= len(array):
        return array
    grown = np.zeros(max(size, 2 * len(array)), array.dtype)
    grown[:len(array)] = array
    return grown


class T2CTokenizerCore(RuntimeTokenizerBase):
    """A trained model with the fixed special ids; megatron-core's datasets take it through
    :class:`~megatron_t2c.tokenizer.megatron.MegatronTokenizerAdapter` (this class on megatron's base class).

    ``num_threads`` is how many threads batched encoding uses (1: one core per process, which is what
    preprocessing workers want; -1: all cores).
    """

    def __init__(self, model_path: str | os.PathLike, num_threads: int = 1) -> None:
        self.path = str(model_path)
        self.num_threads = num_threads
        self._load(Path(model_path).read_bytes())

    def _load(self, model: bytes) -> None:
        self._model_bytes = model
        self._sp = spm.SentencePieceProcessor(model_proto=model, num_threads=self.num_threads)
        proto = _model_proto(self._sp)
        check_special_ids(self._sp, proto)
        self._is_bpe = proto.trainer_spec.model_type == _BPE
        self._numpy = hasattr(self._sp, "EncodeAsNumpy")
        self._space_mark_ids = [self._sp.piece_to_id(p) for p in _SPACE_MARK_BYTES]
        self._vocab: dict[str, int] | None = None
        self._begins_word: np.ndarray | None = None  # see words_are_independent
        self._words = _WordTable()

    @property
    def words_are_independent(self) -> bool:
        """Whether a text's ids are its space-separated words' ids in a row (computed on first use).

        True for a BPE model whose pieces hold the space mark ``▁`` only as their first character: merges
        never cross a space then.  Not for unigram models: their Viterbi search can break exact ties
        between segmentations of a word differently in context.
        """
        if self._begins_word is None:
            pieces = self._sp.id_to_piece(list(range(self._sp.get_piece_size())))
            # the pieces that begin a space-separated word: the only ones holding a space mark
            self._begins_word = np.array([p.startswith(_SPACE_MARK) for p in pieces])
            self._independent = (self._is_bpe and not any(_SPACE_MARK in p[1:] for p in pieces)
                                 and not self._sp.is_unknown(self._sp.piece_to_id(_SPACE_MARK)))
        return self._independent

    @property
    def model_bytes(self) -> bytes:
        """The serialized model (what the model file holds)."""
        return self._model_bytes

    def __getstate__(self) -> dict:
        return {"path": self.path, "num_threads": self.num_threads, "model": self._model_bytes}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self.num_threads = state["num_threads"]
        self._load(state["model"])

    # -- what megatron-core reads ---------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of pieces (ids are ``0 .. vocab_size - 1``)."""
        return self._sp.get_piece_size()

    @property
    def vocab(self) -> dict[str, int]:
        """Piece -> id."""
        if self._vocab is None:
            self._vocab = {self._sp.id_to_piece(i): i for i in range(self.vocab_size)}
        return self._vocab

    @property
    def inv_vocab(self) -> dict[int, str]:
        """Id -> piece."""
        return {i: p for p, i in self.vocab.items()}

    @property
    def unique_identifiers(self) -> OrderedDict:
        """Identity for megatron-core's dataset cache keys: class, path and a hash of the model."""
        return OrderedDict(
            [("class", f"{type(self).__module__}.{type(self).__qualname__}"), ("tokenizer_path", self.path),
             ("model_sha256", hashlib.sha256(self._model_bytes).hexdigest())])

    def apply_chat_template(self, *args, **kwargs):
        """Not a chat model."""
        raise NotImplementedError(f"{type(self).__name__} has no chat template")

    # -- encoding and decoding -------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        """Encode text; marker text (``[descr]``, ``[python]``, ...) becomes the markers' ids."""
        if _SPACE_MARK in text:
            return self._encode_space_marks(text)
        return self._sp.encode(text)

    def detokenize(self, ids: Iterable[int]) -> str:
        """Decode ids (a list, tuple or numpy array) to text."""
        if isinstance(ids, np.ndarray):
            ids = ids.tolist()
        return self._sp.decode(list(ids))

    def id_to_piece(self, token_id: int) -> str:
        """The piece of one id."""
        return self._sp.id_to_piece(int(token_id))

    def needs_care(self, text: str) -> bool:
        """Marker text, or a literal ``▁`` (written as byte pieces, which batched encoding does not do)."""
        return _SPACE_MARK in text or super().needs_care(text)

    def encode_batch_flat(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``tokenize`` of many texts: all ids in a row (int32) and each text's length (int64).

        No ``▁`` handling (see :meth:`encode_samples_flat`).  For a BPE model the texts are split at
        spaces and every distinct word is encoded once and kept (up to :attr:`word_cache_size` words, for
        the tokenizer's life): exactly SentencePiece's ids, since no piece crosses a space (checked when
        loading), and several times faster on code, which repeats its words a lot.  Unigram models, which
        encode fast anyway, get their texts encoded whole.
        """
        if not texts:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        if not self.words_are_independent:
            return self._encode_whole(texts)
        table = self._words
        if len(table) > self.word_cache_size:
            table.clear()
        split = [text.split(" ") for text in texts]
        counts = np.fromiter(map(len, split), dtype=np.int64, count=len(split))
        words = list(chain.from_iterable(split))
        # every word as it follows a space; each text's first word is then looked up again on its own
        rows = np.fromiter(map(table.after_space.get, words, repeat(-1)), dtype=np.int64, count=len(words))
        missing = np.flatnonzero(rows < 0).tolist()
        if missing:
            self._add_words_after_space(list(dict.fromkeys(words[i] for i in missing)))
            rows[missing] = [table.after_space[words[i]] for i in missing]
        firsts = [w[0] for w in split]
        new = [w for w in dict.fromkeys(firsts) if w not in table.first]
        if new:
            table.add(table.first, new, self._sp.encode(new, num_threads=self.num_threads))
        text_starts = np.cumsum(counts) - counts
        rows[text_starts] = [table.first[w] for w in firsts]
        tokens, row_lengths = table.gather(rows)
        return tokens, np.add.reduceat(row_lengths, text_starts)

    #: Most distinct words :meth:`encode_batch_flat` keeps (the cache is emptied when it grows past this).
    word_cache_size = 1 << 19

    def _add_words_after_space(self, new: list[str], group: int = 256) -> None:
        """Encode ``" " + word`` for new words into the word table.

        Words go to SentencePiece ``group`` at a time, joined by spaces (far fewer calls), and the ids are
        cut where a piece begins with the space mark, which happens exactly once per word.
        """
        groups = [new[i:i + group] for i in range(0, len(new), group)]
        for words, ids in zip(groups, self._sp.encode([" " + " ".join(g) for g in groups],
                                                      num_threads=self.num_threads)):
            ids = np.asarray(ids, dtype=np.int32)
            starts = np.flatnonzero(self._begins_word[ids])
            if len(starts) != len(words):  # cannot happen for a model that passed the load-time check
                raise RuntimeError("word boundaries lost while encoding a group of words")
            self._words.add_rows(self._words.after_space, words, ids, starts)

    def _encode_whole(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """SentencePiece on whole texts, in one batched call."""
        if self._numpy:
            rows = self._sp.encode(texts, out_type="numpy", num_threads=self.num_threads)
        else:
            rows = [np.asarray(ids, dtype=np.int32)
                    for ids in self._sp.encode(texts, out_type=int, num_threads=self.num_threads)]
        return np.concatenate(rows), np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))

    def _encode_space_marks(self, text: str) -> list[int]:
        ids: list[int] = []
        for k, part in enumerate(text.split(_SPACE_MARK)):
            if k:
                ids += self._space_mark_ids
            if part:
                ids += self._sp.encode(part)
        return ids


def load_tokenizer(model_path: str | os.PathLike, num_threads: int = 1):
    """Load a tokenizer as the object megatron-core's datasets take: a model trained by
    :func:`~megatron_t2c.tokenizer.train.train_tokenizer` (checks the special ids) as
    :class:`~megatron_t2c.tokenizer.megatron.MegatronTokenizerAdapter`, or a Hugging Face tokenizer directory
    (see :func:`megatron_t2c.tokenizer.loading.open_tokenizer`)."""
    from megatron_t2c.tokenizer.loading import open_tokenizer

    return open_tokenizer(model_path, num_threads=num_threads, megatron=True)
