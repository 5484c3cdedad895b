"""The megatron_t2c SentencePiece tokenizer as a Hugging Face tokenizer (remote code of exported directories).

Encoding is exactly :meth:`megatron_t2c.tokenizer.sentencepiece.T2CTokenizerCore.tokenize`: SentencePiece on the raw text
(identity normalisation, no dummy prefix, byte fallback; marker text such as ``[descr]``/``[python]`` becomes
the markers' ids, being user-defined pieces), except that a literal ``▁`` (SentencePiece's escaped space) is
written as its three UTF-8 byte pieces.  No BOS/EOS is added.  Decoding is SentencePiece's ``decode`` of the
ids (``skip_special_tokens`` drops the control pieces and the format markers, never the whitespace markers
``[new_line] [indent] [dedent]``, which are code).

Hugging Face's own splitting on added/special tokens is bypassed: the ids come from SentencePiece alone.
"""

from __future__ import annotations

import os
import shutil
from typing import Optional

import sentencepiece as spm
from transformers import PreTrainedTokenizer

from .special_tokens import BOS, EOC, EOS, FORMAT_MARKERS, IDS, PAD, UNK

_SPACE_MARK = "\u2581"
_SPACE_MARK_PIECES = tuple(f"<0x{b:02X}>" for b in _SPACE_MARK.encode("utf-8"))
#: Ids that ``decode(..., skip_special_tokens=True)`` drops.
_SKIPPED_IDS = frozenset(IDS[p] for p in (PAD, UNK, BOS, EOS, *FORMAT_MARKERS))


class T2CTokenizer(PreTrainedTokenizer):
    """SentencePiece ``tokenizer.model`` with megatron_t2c's fixed special ids (see the module docstring)."""

    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file: str, pad_token: str = PAD, unk_token: str = UNK, eos_token: str = EOC,
                 bos_token: Optional[str] = None, **kwargs):
        self.vocab_file = vocab_file
        self.sp_model = spm.SentencePieceProcessor(model_file=vocab_file)
        for piece, wanted in IDS.items():
            if self.sp_model.piece_to_id(piece) != wanted:
                raise ValueError(f"{vocab_file}: piece {piece!r} has id {self.sp_model.piece_to_id(piece)}, "
                                 f"megatron_t2c fixes it at {wanted}")
        self._space_mark_ids = [self.sp_model.piece_to_id(p) for p in _SPACE_MARK_PIECES]
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        kwargs.setdefault("padding_side", "left")  # generation pads on the left
        super().__init__(pad_token=pad_token, unk_token=unk_token, eos_token=eos_token, bos_token=bos_token,
                         **kwargs)

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

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        return list(token_ids_0) + (list(token_ids_1) if token_ids_1 else [])

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        ids = list(token_ids_0) + (list(token_ids_1) if token_ids_1 else [])
        return [int(i in _SKIPPED_IDS) for i in ids]

    # -- decoding --------------------------------------------------------------------------------------
    def _decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None,
                **kwargs) -> str:
        ids = [int(token_ids)] if isinstance(token_ids, int) else [int(i) for i in token_ids]
        if skip_special_tokens:
            ids = [i for i in ids if i not in _SKIPPED_IDS]
        return self.sp_model.decode(ids)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self.sp_model.decode([self.sp_model.piece_to_id(t) for t in tokens])

    def save_vocabulary(self, save_directory: str, filename_prefix: Optional[str] = None) -> tuple[str]:
        name = (filename_prefix + "-" if filename_prefix else "") + self.vocab_files_names["vocab_file"]
        target = os.path.join(save_directory, name)
        if os.path.abspath(self.vocab_file) != os.path.abspath(target):
            shutil.copyfile(self.vocab_file, target)
        return (target,)
