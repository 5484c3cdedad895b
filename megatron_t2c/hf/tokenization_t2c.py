"""The megatron_t2c SentencePiece tokenizer as a Hugging Face tokenizer (remote code of exported directories).

Encoding is exactly :meth:`megatron_t2c.tokenizer.sentencepiece.T2CTokenizerCore.tokenize`: SentencePiece on the
raw text (identity normalisation, no dummy prefix, byte fallback; marker text such as ``[descr]``/``[python]``
becomes the markers' ids, being user-defined pieces), except that a literal ``▁`` (SentencePiece's escaped space)
is written as its three UTF-8 byte pieces.  No BOS/EOS is added.

Decoding gives Python source by default (:func:`python_text`, for a document or a continuation of a prompt):
the whitespace markers are de-normalised with megatron_t2c's own ``normalise.denormalise`` (shipped beside
this file), the function the evaluation uses.

``decode(..., raw=True)``, or ``T2CTokenizer(..., decode_python=False)`` (saved in ``tokenizer_config.json``),
gives the raw SentencePiece text instead (``skip_special_tokens`` then drops the control pieces and the format
markers, never the whitespace markers ``[new_line] [indent] [dedent]``, which are code).

Hugging Face's own splitting on added/special tokens is bypassed: the ids come from SentencePiece alone.
:class:`T2CTokenizerFast` is the same over ``tokenizer.json`` (the Rust ``tokenizers`` library: SentencePiece's
BPE with byte fallback, the markers as atomic pieces); it encodes as SentencePiece does, except that a literal
``▁`` in the text is read as a space there.
"""

from __future__ import annotations

import os
import shutil
from typing import Optional

import sentencepiece as spm
from transformers import PreTrainedTokenizer, PreTrainedTokenizerFast

from .normalise import _MARKER_SCAN, denormalise
from .special_tokens import (BOS, DEDENT, DESCR_ID, EOC, EOC_ID, EOS, FORMAT_MARKERS, IDS, INDENT, NEW_LINE, PAD,
                             PYTHON_ID, SOS_ID, UNK)

_SPACE_MARK = "\u2581"
_SPACE_MARK_PIECES = tuple(f"<0x{b:02X}>" for b in _SPACE_MARK.encode("utf-8"))
#: Ids that ``decode(..., skip_special_tokens=True)`` drops.
_SKIPPED_IDS = frozenset(IDS[p] for p in (PAD, UNK, BOS, EOS, *FORMAT_MARKERS))
#: Ids never part of the text of a document (control pieces, [MASK]).
_CONTROL_IDS = frozenset(IDS[p] for p in (PAD, UNK, BOS, EOS)) | {IDS["[MASK]"]}


def _continuation(text: str, indent: str) -> str:
    """Normalised code that continues a prompt's code -> the source to append to the prompt's source.

    Text before its first ``[new_line]`` continues the prompt's last line, the lines after it are indented
    relative to the prompt's last line, whose level is taken from the continuation's own dedents (a function
    that the model closes says how deep it was).
    """
    markers = [m for m in _MARKER_SCAN.finditer(text) if m.lastgroup == "m"]
    if not markers:
        return text
    level = deficit = 0  # the prompt's level: as deep as the continuation's dedents go below its start
    for m in markers:
        level += {INDENT: 1, DEDENT: -1}.get(m.group(), 0)
        deficit = max(deficit, -level)
    head, first = text[:markers[0].start()], markers[0]
    if head.strip():  # the prompt's last line goes on
        out = head.rstrip(" ") + "\n"
        rest = text[first.end():] if first.group() == NEW_LINE else text[first.start():]
    elif first.group() == NEW_LINE:  # the prompt's last line ends here
        out, rest = "\n", text[first.end():]
    else:  # a new line (the prompt ended with [new_line])
        out, rest = "", text
    return out + denormalise(" ".join([INDENT] * deficit + [rest]), indent)


def python_text(ids, decode, indent: str = "    ") -> str:
    """Python source of token ids; ``decode`` maps ids to SentencePiece text.

    * a document (ids with format markers): ``[descr] doc`` becomes ``# doc`` comment lines, the code (a
      PyCodeGPT ``[sos] signature`` joined to the body after ``[python]``) is de-normalised; decoding stops
      at ``[eoc]`` (documents after it follow, one blank line apart);
    * a continuation (only code ids: what ``pipeline("text-generation")`` decodes, the new tokens alone)
      appends to the prompt's code: text before its first ``[new_line]`` continues the prompt's last line,
      the lines after it are indented relative to the prompt's last line, whose level is taken from the
      continuation's own dedents (a function that the model closes says how deep it was)
      (:func:`_continuation`).  So ``"def add(a, b):" + decode(new)`` is the function.

    The whitespace markers are de-normalised with megatron_t2c's own ``normalise.denormalise``.
    """
    ids = [int(i) for i in ids if int(i) not in _CONTROL_IDS]
    if not any(i in (DESCR_ID, PYTHON_ID, SOS_ID) for i in ids):
        cut = ids.index(EOC_ID) if EOC_ID in ids else len(ids)
        return _continuation(decode(ids[:cut]), indent)
    documents, current = [], []
    for i in ids:
        if i == EOC_ID:
            documents.append(current)
            current = []
        else:
            current.append(i)
    if current:
        documents.append(current)
    return "\n".join(_document(doc, decode, indent) for doc in documents if doc)


def _document(ids: list, decode, indent: str) -> str:
    parts: dict = {}
    key = None  # ids before any marker: code
    for i in ids:
        if i in (DESCR_ID, PYTHON_ID, SOS_ID):
            key = i
            parts.setdefault(key, [])
        else:
            parts.setdefault(key, []).append(i)
    doc = decode(parts.get(DESCR_ID, [])).strip()
    code = " ".join(t for t in (decode(parts.get(None, [])).strip(), decode(parts.get(SOS_ID, [])).strip(),
                                decode(parts.get(PYTHON_ID, [])).strip()) if t)
    comment = "".join(f"# {line}\n" for line in doc.splitlines()) if doc else ""
    return comment + denormalise(code, indent)


class _T2CIdsAndDecoding:
    """What both tokenizer classes share: no BOS/EOS added, which ids count as special, and decoding -- raw
    (``_raw``, the class's own detokenizer) or, by default, to Python source (:func:`python_text`)."""

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        return list(token_ids_0) + (list(token_ids_1) if token_ids_1 else [])

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        ids = list(token_ids_0) + (list(token_ids_1) if token_ids_1 else [])
        return [int(i in _SKIPPED_IDS) for i in ids]

    def _decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None,
                raw: Optional[bool] = None, **kwargs) -> str:
        ids = [int(token_ids)] if isinstance(token_ids, int) else [int(i) for i in token_ids]
        if not (self.decode_python if raw is None else not raw):
            if skip_special_tokens:
                ids = [i for i in ids if i not in _SKIPPED_IDS]
            return self._raw(ids)
        return python_text(ids, self._raw)


class T2CTokenizer(_T2CIdsAndDecoding, PreTrainedTokenizer):
    """SentencePiece ``tokenizer.model`` with megatron_t2c's fixed special ids (see the module docstring)."""

    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file: str, pad_token: str = PAD, unk_token: str = UNK, eos_token: str = EOC,
                 bos_token: Optional[str] = None, decode_python: bool = True, **kwargs):
        self.vocab_file = vocab_file
        self.decode_python = decode_python
        self.sp_model = spm.SentencePieceProcessor(model_file=vocab_file)
        for piece, wanted in IDS.items():
            if self.sp_model.piece_to_id(piece) != wanted:
                raise ValueError(f"{vocab_file}: piece {piece!r} has id {self.sp_model.piece_to_id(piece)}, "
                                 f"megatron_t2c fixes it at {wanted}")
        self._space_mark_ids = [self.sp_model.piece_to_id(p) for p in _SPACE_MARK_PIECES]
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        kwargs.setdefault("padding_side", "left")  # generation pads on the left
        super().__init__(pad_token=pad_token, unk_token=unk_token, eos_token=eos_token, bos_token=bos_token,
                         decode_python=decode_python, **kwargs)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["sp_model"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.sp_model = spm.SentencePieceProcessor(model_file=self.vocab_file)

    # -- vocabulary ------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.sp_model.get_piece_size()

    def get_vocab(self) -> dict[str, int]:
        return {self.sp_model.id_to_piece(i): i for i in range(self.vocab_size)}

    def _convert_token_to_id(self, token: str) -> int:
        return self.sp_model.piece_to_id(token)

    def _convert_id_to_token(self, index: int) -> str:
        return self.sp_model.id_to_piece(int(index))

    # -- encoding --------------------------------------------------------------------------------------
    def encode_ids(self, text: str) -> list[int]:
        """The ids of ``text``: megatron_t2c's ``T2CTokenizerCore.tokenize``."""
        if _SPACE_MARK not in text:
            return self.sp_model.encode(text)
        ids: list[int] = []
        for k, part in enumerate(text.split(_SPACE_MARK)):
            if k:
                ids += self._space_mark_ids
            if part:
                ids += self.sp_model.encode(part)
        return ids

    def tokenize(self, text: str, **kwargs) -> list[str]:
        return [self.sp_model.id_to_piece(i) for i in self.encode_ids(text)]

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return self.tokenize(text)

    # -- decoding (shared with the fast class: _T2CIdsAndDecoding) -------------------------------------
    def _raw(self, ids) -> str:
        return self.sp_model.decode(list(ids))

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self.sp_model.decode([self.sp_model.piece_to_id(t) for t in tokens])

    def save_vocabulary(self, save_directory: str, filename_prefix: Optional[str] = None) -> tuple[str]:
        name = (filename_prefix + "-" if filename_prefix else "") + self.vocab_files_names["vocab_file"]
        target = os.path.join(save_directory, name)
        if os.path.abspath(self.vocab_file) != os.path.abspath(target):
            shutil.copyfile(self.vocab_file, target)
        return (target,)


class T2CTokenizerFast(_T2CIdsAndDecoding, PreTrainedTokenizerFast):
    """:class:`T2CTokenizer` over ``tokenizer.json`` (Rust ``tokenizers``), with the same Python decoding."""

    vocab_files_names = {"tokenizer_file": "tokenizer.json"}
    model_input_names = ["input_ids", "attention_mask"]
    slow_tokenizer_class = T2CTokenizer

    # No __init__ of its own: transformers then loads tokenizer.json as it is (a class with one would be rebuilt
    # from the vocabulary alone).  ``decode_python`` and the left padding come from tokenizer_config.json.
    @property
    def decode_python(self) -> bool:
        return bool(self.init_kwargs.get("decode_python", True))

    def _raw(self, ids) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)
