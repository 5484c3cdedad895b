"""Which modality every token of a packed row or a generation prefix belongs to: shared, docstring or code.

Modality is a function of the token stream alone: the format's markers switch a small state machine and
every token takes the state of the last marker at or before it.  It is computed here with ``cummax`` over
marker positions (no Python loop over tokens, no host synchronisation), for any leading dimensions, on
CPU or CUDA.  Nothing about modality is stored in the datasets.

=============  ==========================================================================================
format         segments
=============  ==========================================================================================
``pangu``      ``[descr]`` -> docstring ... ``[python]`` -> code ... ``[eoc]`` -> outside
``pycodegpt``  ``[sos]`` -> code (the signature) ... ``[descr]`` -> docstring ... ``[python]`` -> code ...
               ``[eoc]`` -> outside
=============  ==========================================================================================

Two views of the same state machine: :func:`segment_ids` (the segment a position is in, which is also its
output space) and :func:`modality_ids` (the token's own modality: special tokens are always shared).  A row
that starts inside a document is handled by :data:`SEGMENT_BEFORE`.  A generation prefix is a row like any
other: a prompt ends with ``[python]``, so everything generated after it is code.

This file must stay self-contained (it imports only torch): the Hugging Face export ships its source
verbatim.  The ids below are those of :mod:`megatron_t2c.mrpt.special_tokens` (a test checks that they agree).
"""

from __future__ import annotations

from typing import Mapping

import torch

SHARED, DOCSTRING, CODE = 0, 1, 2
FORMATS = ("pangu", "pycodegpt")

#: Fixed special ids (= megatron_t2c.mrpt.special_tokens): format markers ...
DESCR_ID, PYTHON_ID, EOC_ID, SOS_ID = 4, 5, 6, 7
#: ... and every id below this one is special (never a code row).
NUM_SPECIAL = 15

#: Per format: marker id -> segment from the marker on.
SEGMENT_AFTER: dict[str, dict[int, int]] = {
    "pangu": {DESCR_ID: DOCSTRING, PYTHON_ID: CODE, EOC_ID: SHARED},
    "pycodegpt": {SOS_ID: CODE, DESCR_ID: DOCSTRING, PYTHON_ID: CODE, EOC_ID: SHARED},
}
#: Per format: marker id -> segment of the tokens before it when it is the first marker of a row.
#: Packing cuts documents anywhere, so a row may start inside one; its tokens before the first marker take
#: the segment that precedes that marker in a well-formed sample:
#:
#: - ``[eoc]`` first (both formats): code, the end of a code body;
#: - ``[python]`` first: docstring (in PanGu only a docstring can precede ``[python]``; in PyCodeGPT it is
#:   ambiguous -- a code-only sample has the signature there -- but the MRPT data, text-code pairs, have the
#:   docstring);
#: - ``[descr]`` first: shared in PanGu (nothing precedes a document's first marker), code (the signature) in
#:   PyCodeGPT; ``[sos]`` first: shared.
SEGMENT_BEFORE: dict[str, dict[int, int]] = {
    "pangu": {DESCR_ID: SHARED, PYTHON_ID: DOCSTRING, EOC_ID: CODE},
    "pycodegpt": {SOS_ID: SHARED, DESCR_ID: CODE, PYTHON_ID: DOCSTRING, EOC_ID: CODE},
}
#: Segment of a row without any marker: it lies inside one long document, in practice its code (docstrings
#: are single lines).
SEGMENT_NO_MARKER = CODE


def _lookup(tokens: torch.Tensor, table: Mapping[int, int], missing: int) -> torch.Tensor:
    """``table[token]`` per element, ``missing`` for tokens not in the table (a few ``where``s, no copy)."""
    out = torch.full_like(tokens, missing)
    for token_id, value in table.items():  # a loop over the few markers, not over tokens
        out = torch.where(tokens == token_id, value, out)
    return out


def marker_states(tokens: torch.Tensor, after: Mapping[int, int], before: Mapping[int, int],
                  no_marker: int) -> torch.LongTensor:
    """The state of a marker-driven state machine after reading each token.

    ``after[m]`` is the state from marker ``m`` on (the marker included); tokens before the first marker
    of a row take ``before[m]`` of that first marker, or ``no_marker`` when the row has none.  Rows are
    the last dimension.  Vectorised: the position of the last marker at or before each token is a
    ``cummax``; nothing leaves the device.
    """
    tokens = tokens.long()
    length = tokens.shape[-1]
    if tokens.numel() == 0:
        return torch.empty_like(tokens)
    marker_state = _lookup(tokens, after, -1)
    is_marker = marker_state >= 0
    positions = torch.arange(length, device=tokens.device).expand_as(tokens)
    last = torch.where(is_marker, positions, -1).cummax(dim=-1).values
    state = marker_state.gather(-1, last.clamp(min=0))
    first = torch.where(is_marker, positions, length).amin(dim=-1, keepdim=True)
    first_token = tokens.gather(-1, first.clamp(max=length - 1))
    initial = torch.where(first < length, _lookup(first_token, before, no_marker), no_marker)
    return torch.where(last >= 0, state, initial)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def segment_ids(tokens: torch.Tensor, fmt: str) -> torch.LongTensor:
    """The segment (``SHARED`` = outside a document, ``DOCSTRING``, ``CODE``) after reading each token.

    Markers belong to the segment they open; ``[eoc]`` closes the document, so it and anything after it is
    ``SHARED``.  This is also the output space of a position: the segment of the token it predicts, for every
    label that is not itself a marker.  Same shape as ``tokens``.
    """
    _check_format(fmt)
    return marker_states(tokens, SEGMENT_AFTER[fmt], SEGMENT_BEFORE[fmt], SEGMENT_NO_MARKER)


def modality_ids(tokens: torch.Tensor, fmt: str) -> torch.LongTensor:
    """Each token's modality: ``SHARED`` (0), ``DOCSTRING`` (1) or ``CODE`` (2).

    ``tokens``: integer ids, any leading dimensions, the sequence last; the result has the same shape
    and device (int64).  A token's modality is its segment (:func:`segment_ids`), except that every special
    id (``< NUM_SPECIAL``: pad/unk/bos/eos, the format markers, ``[MASK]``, the whitespace markers
    ``[new_line] [indent] [dedent]`` and raw ``\\n \\t \\r``) is ``SHARED``: specials never get code rows, even
    inside code (as in the paper's release).
    """
    segments = segment_ids(tokens, fmt)
    special = (tokens >= 0) & (tokens < NUM_SPECIAL)
    return torch.where(special, SHARED, segments)
