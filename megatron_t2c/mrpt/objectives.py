"""The MRPT objectives of paper §2.2.2 on packed rows: loss masks, CORRUPT-CODE corruption, attention masks.

A packed row holds several documents, each ending WITH its ``[eoc]`` (megatron-core's end of document);
``tokens`` and ``labels`` are the row and the row shifted by one, as megatron's ``GPTDataset`` gives them
(``labels[..., :-1] == tokens[..., 1:]``).  Everything is vectorised over any leading dimensions, the
sequence last, and never synchronises with the host.

==================  ============================  ==================================  =========================
objective           loss on positions whose       input                               attention
                    label is ...
==================  ============================  ==================================  =========================
``text-code``       anything but padding          as is                               causal, per document
``code``            code (see :func:`loss_mask`)  as is                               causal, per document
``corrupt-code``    code                          docstring tokens corrupted (15 %,   causal, per document
                                                  80/10/10, :func:`corrupt`)
``prefix-code``     code outside the prefix       as is                               per document; the
                                                                                      prefix bidirectional
==================  ============================  ==================================  =========================

Rules decided here: the **code loss** (:func:`code_labels`, :func:`loss_mask`), the **prefix** of
prefix-code and rows that start inside a document (:func:`prefix_mask`), the **corruption ids**
(:func:`corrupt`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .modality import (CODE, DOCSTRING, NUM_SPECIAL, _check_format, marker_states, modality_ids,
                       segment_ids)
from .special_tokens import DESCR_ID, EOC_ID, MASK_ID, PAD_ID, PYTHON_ID, SOS_ID

OBJECTIVES = ("text-code", "code", "corrupt-code", "prefix-code")

#: Markers that open a segment: the prompt supplies them, they are never trained as code labels.
_OPENING_MARKERS = (SOS_ID, DESCR_ID, PYTHON_ID)

# Prefix phases of prefix-code: outside a document, in the prefix, in the code body.
_OUTSIDE, _PREFIX, _BODY = 0, 1, 2
_PREFIX_AFTER = {
    "pangu": {DESCR_ID: _PREFIX, PYTHON_ID: _BODY, EOC_ID: _OUTSIDE},
    "pycodegpt": {SOS_ID: _PREFIX, DESCR_ID: _PREFIX, PYTHON_ID: _BODY, EOC_ID: _OUTSIDE},
}
_PREFIX_BEFORE = {
    "pangu": {DESCR_ID: _OUTSIDE, PYTHON_ID: _PREFIX, EOC_ID: _BODY},
    "pycodegpt": {SOS_ID: _OUTSIDE, DESCR_ID: _PREFIX, PYTHON_ID: _PREFIX, EOC_ID: _BODY},
}


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose from {', '.join(OBJECTIVES)}")


def _full_row(tokens: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """The ``seq + 1`` ids the row was cut from: ``tokens`` then the last label (just ``tokens`` without labels)."""
    if labels is None:
        return tokens.long()
    return torch.cat([tokens[..., :1].long(), labels.long()], dim=-1)


# --------------------------------------------------------------------------------- documents, positions

def document_ids(tokens: torch.Tensor, eod_id: int = EOC_ID) -> torch.LongTensor:
    """Per position, the index (from 0 in each row) of the document it belongs to; ``[eoc]`` ends its own."""
    eod = (tokens == eod_id).long()
    return eod.cumsum(dim=-1) - eod


def position_ids(tokens: torch.Tensor, eod_id: int = EOC_ID) -> torch.LongTensor:
    """Positions restarting at 0 at the first token of each document (the token after an ``[eoc]``).

    The same as megatron-core's ``reset_position_ids``; a row's first token is position 0.
    """
    length = tokens.shape[-1]
    positions = torch.arange(length, device=tokens.device).expand(tokens.shape)
    starts = torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)
    starts[..., 1:] = tokens[..., :-1] == eod_id
    start = torch.where(starts, positions, 0).cummax(dim=-1).values
    return positions - start


# ------------------------------------------------------------------------------------------ prefix

def prefix_mask(tokens: torch.Tensor, fmt: str) -> torch.BoolTensor:
    """Which tokens are in their document's prefix: from the document's start through its ``[python]``.

    Prefix (prefix-code): every token of a document from its start through its ``[python]`` inclusive --
    PanGu ``[descr] docstring [python]``, PyCodeGPT ``[sos] signature [descr] docstring [python]``
    (code-only samples: ``[python]`` alone, resp. ``[sos] signature [python]``) -- exactly the prompt given
    at generation.  Prefix tokens attend to each other both ways within their document; everything else is
    causal (:func:`attention_mask`).  Labels inside the prefix are never trained under prefix-code (a prefix
    position sees its own label; :func:`loss_mask`).

    A row starting inside a document infers its first tokens' state from the next marker
    (:mod:`megatron_t2c.mrpt.modality`); the prefix likewise: tokens before a row's first ``[python]``
    (PanGu) or first ``[descr]``/``[python]`` (PyCodeGPT) are prefix, tokens before a first ``[eoc]`` or in
    a row with no marker are code body.
    """
    _check_format(fmt)
    phase = marker_states(tokens, _PREFIX_AFTER[fmt], _PREFIX_BEFORE[fmt], _BODY)
    return (phase == _PREFIX) | (tokens == PYTHON_ID)


# --------------------------------------------------------------------------------------------- loss

def code_labels(tokens: torch.Tensor, labels: torch.Tensor, fmt: str) -> torch.BoolTensor:
    """Positions whose label lies in a code segment or is the ``[eoc]`` closing one.

    Code loss: a position is trained when its label lies in a code segment -- a code token, or a special
    inside code (``[new_line] [indent] [dedent]``, raw ``\\n \\t \\r``: without them a model never learns
    line structure) -- or when its label is the ``[eoc]`` that closes a code segment (else a model never
    learns to stop).  Markers that open segments (``[sos] [descr] [python]``) are never code labels: the
    prompt supplies them.

    In PyCodeGPT the signature (``[sos] signature [descr] docstring [python]``) is code but is never trained
    by the code objectives (:func:`loss_mask` removes the prefix): it is always given in the prompt, and the
    paper's release masks it (its ``code-only`` collator sets the labels of ``[sos]``, the signature,
    ``[descr]``, the docstring and ``[python]`` to -100).  Only the body after ``[python]`` and the closing
    ``[eoc]`` are trained.  PanGu is unchanged (its signature follows ``[python]``).
    """
    segments = segment_ids(_full_row(tokens, labels), fmt)
    before, at = segments[..., :-1], segments[..., 1:]  # segment after the input token, after the label
    labels = labels.long()
    opening = torch.zeros_like(labels, dtype=torch.bool)
    for marker in _OPENING_MARKERS:
        opening |= labels == marker
    return ((at == CODE) & ~opening) | ((labels == EOC_ID) & (before == CODE))


def loss_mask(tokens: torch.Tensor, labels: torch.Tensor, fmt: str, objective: str) -> torch.Tensor:
    """Float mask (1 = trained) over positions: which labels an objective trains; padding labels never.

    ``text-code``: every position; ``code`` and ``corrupt-code``: :func:`code_labels` (PyCodeGPT: those
    after the document's ``[python]``: not the signature); ``prefix-code``: :func:`code_labels` whose label
    is not in the prefix (the same rule: in PyCodeGPT the signature is in the prefix).
    """
    _check_objective(objective)
    keep = labels != PAD_ID
    if objective != "text-code":
        keep = keep & code_labels(tokens, labels, fmt)
    if objective == "prefix-code" or (fmt == "pycodegpt" and objective in ("code", "corrupt-code")):
        keep = keep & ~prefix_mask(_full_row(tokens, labels), fmt)[..., 1:]
    return keep.float()


# ---------------------------------------------------------------------------------------- corruption

def _signed(value: int) -> int:
    """A 64-bit pattern as the int64 it is stored as."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 (Steele et al. 2014) of ``x`` as 64-bit patterns in int64 (wrapping arithmetic)."""
    x = x + _GOLDEN
    x = (x ^ _shr(x, 30)) * _MIX1
    x = (x ^ _shr(x, 27)) * _MIX2
    return x ^ _shr(x, 31)


def position_hash(seed: int, sample_ids: torch.Tensor, length: int, stream: int) -> torch.Tensor:
    """Counter-based random 64-bit values for ``(seed, sample id, position, stream)``, shape ``[..., length]``.

    ``sample_ids`` has the rows' leading shape; the same inputs give the same bits on any device, rank or
    resume: no generator state.
    """
    positions = torch.arange(length, device=sample_ids.device)
    row = splitmix64(sample_ids.long() + _signed(seed))
    return splitmix64(splitmix64(row[..., None] + positions) + stream)


_UNIT = 1 << 24  # random fractions are compared as 24-bit integers


def corrupt(tokens: torch.Tensor, modality: torch.Tensor, *, seed: int, sample_ids: torch.Tensor | int,
            vocab_size: int, mask_id: int = MASK_ID, rate: float = 0.15,
            ordinary_low: int = NUM_SPECIAL) -> torch.Tensor:
    """CORRUPT-CODE input corruption of the docstring tokens; labels are not touched.

    Each position whose ``modality`` is ``DOCSTRING`` is selected with probability ``rate``; a selected
    token becomes ``mask_id`` (80 %), a uniformly random ordinary id in ``[ordinary_low, vocab_size)``
    (10 %) or stays (10 %).  Code and shared tokens are never changed.  The draws are a hash of
    ``(seed, sample id, position in the row)`` (:func:`position_hash`): pass ``sample_ids`` (one per row,
    e.g. the ``GPTDataset`` index; on the tokens' device to avoid a copy) and the same sample gets the
    same corruption on every rank, device and resume.

    Corruption ids: replacements are ordinary base-vocabulary ids, ``id >= NUM_SPECIAL`` (15): never a
    special or format marker (so corruption never changes modality or document structure), but the
    byte-fallback pieces 15-270 are included -- they are ordinary text (every byte of rare characters).
    """
    if not 0 <= rate <= 1:
        raise ValueError("rate must be in [0, 1]")
    if vocab_size <= ordinary_low:
        raise ValueError(f"vocab_size {vocab_size} leaves no ordinary ids (>= {ordinary_low})")
    sample_ids = torch.as_tensor(sample_ids, device=tokens.device).expand(tokens.shape[:-1])
    length = tokens.shape[-1]
    select = _shr(position_hash(seed, sample_ids, length, 1), 40) < round(rate * _UNIT)
    action = _shr(position_hash(seed, sample_ids, length, 2), 40)
    random_ids = ordinary_low + _shr(position_hash(seed, sample_ids, length, 3), 1) % (vocab_size - ordinary_low)
    selected = select & (modality == DOCSTRING)
    out = torch.where(selected & (action < round(0.8 * _UNIT)), mask_id, tokens.long())
    out = torch.where(selected & (action >= round(0.8 * _UNIT)) & (action < round(0.9 * _UNIT)), random_ids, out)
    return out.to(tokens.dtype)


# ----------------------------------------------------------------------------------------- attention

def attention_mask(tokens: torch.Tensor, fmt: str, objective: str, eod_id: int = EOC_ID, *,
                   labels: torch.Tensor | None = None) -> torch.BoolTensor:
    """Boolean ``[..., 1, s, s]`` mask, ``True`` = masked (megatron's convention).

    Causal within each document, never across an ``[eoc]`` boundary; under ``prefix-code`` the tokens of
    a document's prefix (:func:`prefix_mask`) also see each other both ways.  ``labels`` (optional) lets a
    row without any marker in ``tokens`` infer its prefix from the last label too, as the loss mask does.
    """
    _check_objective(objective)
    length = tokens.shape[-1]
    docs = document_ids(tokens, eod_id)
    same_doc = docs[..., :, None] == docs[..., None, :]
    causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
    allowed = same_doc & causal
    if objective == "prefix-code":
        prefix = prefix_mask(_full_row(tokens, labels), fmt)[..., :length]
        allowed = allowed | (same_doc & prefix[..., :, None] & prefix[..., None, :])
    return (~allowed).unsqueeze(-3)


def attends(mask: torch.Tensor) -> list[list[list[int]]]:
    """Per query position, the ``[start, end)`` key ranges it attends to, from one ``[s, s]`` mask (``True`` =
    masked; leading dimensions of size 1 are dropped).  A tool for inspection, not for training."""
    mask = mask.reshape(mask.shape[-2:]) if mask.dim() > 2 else mask
    allowed = ~mask.bool().cpu()
    padded = torch.nn.functional.pad(allowed.to(torch.int8), (1, 1))
    edges = padded[:, 1:] - padded[:, :-1]  # +1 where a run starts, -1 one past its end
    out = []
    for row in edges:
        starts = (row == 1).nonzero().flatten().tolist()
        ends = (row == -1).nonzero().flatten().tolist()
        out.append([[s, e] for s, e in zip(starts, ends)])
    return out


# --------------------------------------------------------------------------------------------- batch

class Batch(NamedTuple):
    """What the model and the training step consume for one objective (all ``[..., s]`` but the mask)."""

    input_ids: torch.Tensor  # the tokens, docstring corrupted under corrupt-code
    labels: torch.Tensor  # next tokens, base-vocabulary ids (unchanged)
    loss_mask: torch.Tensor  # float, 1 = trained
    position_ids: torch.Tensor  # restart at 0 in each document
    attention_mask: torch.Tensor  # bool [..., 1, s, s], True = masked
    modality: torch.Tensor  # modality of the original input tokens (embedding rows)
    label_modality: torch.Tensor  # output space of the position: CODE where its label is in code


def build_batch(tokens: torch.Tensor, labels: torch.Tensor, fmt: str, objective: str, *, seed: int,
                sample_ids: torch.Tensor | int, vocab_size: int, eod_id: int = EOC_ID) -> Batch:
    """Everything one objective needs from a packed ``tokens``/``labels`` pair.

    ``modality`` is :func:`~megatron_t2c.mrpt.modality.modality_ids` of the original tokens (specials shared).
    ``label_modality`` is the segment a position is in after reading its input token
    (:func:`~megatron_t2c.mrpt.modality.segment_ids`): for every label that is not a marker it is the label's
    own modality; a position predicting a special inside code (``[new_line]``, the closing ``[eoc]``) is
    ``CODE`` too, so the model scores with code rows wherever the context is code -- the only rule a
    generator, which does not know the next token, can follow as well.  Both are computed on the full
    ``seq + 1`` row (tokens and the last label).
    """
    _check_objective(objective)
    full = _full_row(tokens, labels)
    length = tokens.shape[-1]
    modality = modality_ids(full, fmt)[..., :length]
    label_modality = segment_ids(full, fmt)[..., :length]
    input_ids = tokens
    if objective == "corrupt-code":
        input_ids = corrupt(tokens, modality, seed=seed, sample_ids=sample_ids, vocab_size=vocab_size)
    return Batch(
        input_ids=input_ids,
        labels=labels,
        loss_mask=loss_mask(tokens, labels, fmt, objective),
        position_ids=position_ids(tokens, eod_id),
        attention_mask=attention_mask(tokens, fmt, objective, eod_id, labels=labels),
        modality=modality,
        label_modality=label_modality,
    )
