"""Hugging Face export of megatron_t2c models: remote-code model, config and tokenizer, and the converter.

The files ``configuration_t2c.py``, ``modeling_t2c.py`` and ``tokenization_t2c.py`` are copied verbatim into
every exported directory, beside megatron_t2c's own ``modality.py``, ``objectives.py``, ``special_tokens.py``
and ``normalise.py`` (the rules the model applies; never re-implemented).  The modelling code imports those
as siblings (``from .modality import ...``); inside the package the siblings are the package's modules
themselves, registered below under this package's name, so the same file runs in both places.

The conversion (megatron <-> Hugging Face) is :mod:`.export`, :mod:`.import_hf` and :mod:`.verify`, over
:mod:`.architecture`, :mod:`.weight_map` and :mod:`.safetensors_files`.
"""

from __future__ import annotations

import sys

from megatron_t2c.mrpt import modality
from megatron_t2c.mrpt import normalise
from megatron_t2c.mrpt import objectives
from megatron_t2c.mrpt import special_tokens

#: megatron_t2c modules the remote code imports as siblings; shipped verbatim in exported directories.
SHIPPED_MODULES = (modality, objectives, special_tokens, normalise)
#: The ones the tokenizer's remote code imports (shipped with every export, stock GPT-2 ones too).
TOKENIZER_MODULES = (special_tokens, normalise)

for _module in SHIPPED_MODULES:
    sys.modules.setdefault(f"{__name__}.{_module.__name__.rsplit('.', 1)[-1]}", _module)
