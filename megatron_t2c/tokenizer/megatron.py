"""The tokenizer object megatron-core consumes: the runtime tokenizer on megatron-core's tokenizer base class.

Only this module imports megatron-core for the tokenizer (importing it costs seconds, which training a
tokenizer, preprocessing and ``--help`` should not pay): import it where a megatron-core dataset needs the
tokenizer, or call :func:`megatron_t2c.tokenizer.loading.open_tokenizer` with ``megatron=True``.
"""

from __future__ import annotations

import warnings

from megatron_t2c.tokenizer.huggingface import HFTokenizerCore
from megatron_t2c.tokenizer.sentencepiece import T2CTokenizerCore

try:
    with warnings.catch_warnings():  # "Transformer Engine and Apex are not installed": irrelevant here
        warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex", category=UserWarning)
        from megatron.core.tokenizers import MegatronTokenizerBase
except ImportError:  # pragma: no cover - only where megatron-core is not installed (e.g. generation on a GPU box)
    MegatronTokenizerBase = object

__all__ = ["MegatronTokenizerAdapter", "MegatronHFTokenizerAdapter"]


class MegatronTokenizerAdapter(T2CTokenizerCore, MegatronTokenizerBase):
    """The text-to-code tokenizer as megatron-core 0.16.1's ``MegatronTokenizerBase`` (the declared type of
    ``GPTDatasetConfig.tokenizer``), with what ``GPTDataset``/``MegatronDataset`` read: ``vocab_size``,
    ``eod``, ``pad``, ``unique_identifiers``; see :class:`T2CTokenizerCore` for the rest."""

    __init__ = T2CTokenizerCore.__init__  # the base's __init__(path, config) only stores attributes


class MegatronHFTokenizerAdapter(HFTokenizerCore, MegatronTokenizerBase):
    """A Hugging Face tokenizer directory (:class:`HFTokenizerCore`, fixed special ids) as megatron-core's
    ``MegatronTokenizerBase``."""

    __init__ = HFTokenizerCore.__init__
