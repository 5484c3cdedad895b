"""``tokenizer.json``: our SentencePiece model as a ``tokenizers`` (Rust) tokenizer that encodes as it does.

Serving stacks (vLLM, TGI) read ``tokenizer.json`` and no SentencePiece model.  Ours is a SentencePiece BPE
model trained with identity normalisation, no dummy prefix, no whitespace clean-up, byte fallback and the
markers (plus ``\\n \\t \\r``) as user-defined pieces (:func:`megatron_t2c.tokenizer.train.trainer_kwargs`).
The equivalent ``tokenizers`` pipeline:

* normaliser: a space becomes ``▁`` (nothing else: identity normalisation);
* pre-tokeniser: the user-defined pieces are cut out whole (SentencePiece emits them whole, never merged);
* model: BPE over the same vocabulary, merges ranked by piece score (SentencePiece merges the pair whose
  result scores highest), byte fallback to ``<0xNN>`` pieces;
* decoder: ``▁`` -> space, byte pieces -> bytes.

The one difference: a literal ``▁`` in the text reads as a space here, while megatron_t2c writes it as its
three byte pieces (``T2CTokenizerCore.tokenize``); the standard library has none.  The tests check equality
on the stdlib corpus.  Unigram models are refused (only BPE models are trained for export here).
"""

from __future__ import annotations

import re

_BPE, _NORMAL, _USER_DEFINED = 2, 1, 4


def build_fast_tokenizer(model_file: str):
    """A ``tokenizers.Tokenizer`` equivalent to the SentencePiece BPE model at ``model_file``."""
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    proto = sentencepiece_model_pb2.ModelProto()
    with open(model_file, "rb") as fh:
        proto.ParseFromString(fh.read())
    spec, norm = proto.trainer_spec, proto.normalizer_spec
    if spec.model_type != _BPE:
        raise ValueError(f"{model_file}: only SentencePiece BPE models have a tokenizer.json here")
    if norm.add_dummy_prefix or norm.remove_extra_whitespaces or norm.precompiled_charsmap or not spec.byte_fallback:
        raise ValueError(f"{model_file}: not trained with megatron_t2c's settings (identity normalisation, no "
                         "dummy prefix, no whitespace clean-up, byte fallback)")
    pieces = [p.piece for p in proto.pieces]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    normal = {p.piece: (p.score, i) for i, p in enumerate(proto.pieces) if p.type == _NORMAL}
    ranked = []
    for piece, (score, i) in normal.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                ranked.append((-score, i, left, right))
    merges = [(left, right) for _, _, left, right in sorted(ranked)]
    user_defined = [p.piece for p in proto.pieces if p.type == _USER_DEFINED]
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token=spec.unk_piece, fuse_unk=True,
                              byte_fallback=True, dropout=None, ignore_merges=bool(user_defined)))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Replace(" ", "\u2581")])
    if user_defined:
        pattern = "|".join(re.escape(p) for p in sorted(user_defined, key=len, reverse=True))
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated")])
    tokenizer.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    return tokenizer
