"""One loader for every ``--tokenizer-model``: a SentencePiece model file or a Hugging Face tokenizer directory.

:func:`open_tokenizer` returns :class:`~megatron_t2c.tokenizer.sentencepiece.T2CTokenizerCore` for a file and
:class:`~megatron_t2c.tokenizer.huggingface.HFTokenizerCore` for a directory (both with the fixed special ids
of :mod:`megatron_t2c.mrpt.special_tokens`), or with ``megatron=True`` their megatron-core adapters
(:mod:`megatron_t2c.tokenizer.megatron`, which imports megatron-core: seconds).  :func:`tokenizer_fingerprint`
identifies the tokenization: the SHA-256 of a SentencePiece file, :meth:`HFTokenizerCore.fingerprint` of a
directory.
"""

from __future__ import annotations

import hashlib
import os

from megatron_t2c.tokenizer.huggingface import SIDECAR_FILE, TokenizerLoadError, is_hf_tokenizer_dir

__all__ = ["open_tokenizer", "tokenizer_fingerprint", "tokenizer_kind", "TokenizerLoadError"]


def tokenizer_kind(path: str | os.PathLike) -> str:
    """``"sentencepiece"`` (a file) or ``"huggingface"`` (a tokenizer directory); a one-line
    :class:`TokenizerLoadError` for anything else."""
    if os.path.isfile(path):
        return "sentencepiece"
    if os.path.isdir(path) and (os.path.isfile(os.path.join(path, SIDECAR_FILE)) or is_hf_tokenizer_dir(path)):
        return "huggingface"
    if not os.path.exists(path):
        raise TokenizerLoadError(f"{path}: no such file or directory")
    raise TokenizerLoadError(f"{path}: not a SentencePiece model file nor a Hugging Face tokenizer directory "
                             "(tokenizer.json, or vocab.json + merges.txt)")


def open_tokenizer(path: str | os.PathLike, num_threads: int = 1, megatron: bool = False):
    """The tokenizer at ``path`` (see the module docstring)."""
    kind = tokenizer_kind(path)
    if megatron:
        from megatron_t2c.tokenizer import megatron as adapters  # imports megatron-core (seconds)

        cls = adapters.MegatronTokenizerAdapter if kind == "sentencepiece" else adapters.MegatronHFTokenizerAdapter
    elif kind == "sentencepiece":
        from megatron_t2c.tokenizer.sentencepiece import T2CTokenizerCore as cls
    else:
        from megatron_t2c.tokenizer.huggingface import HFTokenizerCore as cls
    return cls(path, num_threads=num_threads)


def tokenizer_fingerprint(path: str | os.PathLike) -> str:
    """Hex SHA-256 identifying the tokenization of ``path``: of the file's bytes for SentencePiece, the
    canonical tokenizer's for a Hugging Face directory (equal for the original and a saved canonical copy)."""
    if tokenizer_kind(path) == "huggingface":
        return open_tokenizer(path).fingerprint()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
