"""How the rows of our embedding table relate to those of a stock Hugging Face model with its own tokenizer.

A Hugging Face tokenizer is read through the canonical id map of
:class:`~megatron_t2c.tokenizer.huggingface.HFTokenizerCore`: its id ``h`` is our id ``OFFSET + h``, and our
fixed marker ids (``[descr]`` ... ``[dedent]``, below ``OFFSET``) are the markers added as special tokens.
So an import keeps every original row, shifted, and adds the marker rows in front (initialised as the mean
of the tokenizer's rows, or copied where the tokenizer already had the marker); an export to the stock class
undoes the shift and appends the marker rows after the model's rows, with the markers added to the
tokenizer at those ids.  Both are index maps, so the original rows come back bit-identical.
"""

from __future__ import annotations

import torch

from megatron_t2c.hf.architecture import ConversionError
from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.tokenizer.huggingface import MARKERS, OFFSET, HFTokenizerCore  # MARKERS: in append order


def is_hf_tokenizer(tokenizer) -> bool:
    """Whether ``tokenizer`` reads a Hugging Face tokenizer through the canonical id map."""
    return isinstance(tokenizer, HFTokenizerCore)


def check_rows(tokenizer, rows: int, source: str) -> None:
    """One-line errors for a tokenizer that does not fit a model table of ``rows`` rows."""
    beyond = {m: h for m, h in tokenizer.marker_hf_ids.items() if h >= rows}
    if beyond:  # first: such a tokenizer also has more ids than rows
        raise ConversionError(f"{source}: the vocabulary is too small for the markers: the tokenizer puts "
                              + ", ".join(f"{m} at id {h}" for m, h in sorted(beyond.items(), key=lambda kv: kv[1]))
                              + f" but the model's embedding has {rows} rows (resize its embeddings first)")
    if tokenizer.hf_vocab_size > rows:
        raise ConversionError(f"{source}: the tokenizer does not match the weights: it has "
                              f"{tokenizer.hf_vocab_size} ids, the model's embedding {rows} rows")


def import_table(base: torch.Tensor, tokenizer, source: str) -> torch.Tensor:
    """Our table ``[OFFSET + rows, hidden]`` from a Hugging Face table ``[rows, hidden]``: row ``OFFSET + h`` is
    row ``h``; the rows below ``OFFSET`` are the mean of the tokenizer's rows, except markers the tokenizer
    already has, which keep their trained row."""
    rows = base.shape[0]
    check_rows(tokenizer, rows, source)
    offset = OFFSET
    table = base.new_empty(offset + rows, base.shape[1])
    table[offset:] = base
    table[:offset] = base[:tokenizer.hf_vocab_size].double().mean(0).to(base.dtype)
    for marker, h in tokenizer.marker_hf_ids.items():
        table[st.IDS[marker]] = base[h]
    return table


def export_index(tokenizer, vocab_size: int) -> tuple[list[int], dict[str, int]]:
    """For a stock export: which of our rows each Hugging Face row is, and every marker's Hugging Face id.

    Rows ``0 .. vocab_size - OFFSET - 1`` are ours shifted back (a marker the tokenizer had keeps its id),
    then one row per marker the tokenizer lacked.
    """
    offset = OFFSET
    rows = vocab_size - offset
    index = list(range(offset, vocab_size))
    markers = dict(tokenizer.marker_hf_ids)
    for marker, h in markers.items():
        index[h] = st.IDS[marker]
    for marker in MARKERS:
        if marker not in markers:
            markers[marker] = len(index)
            index.append(st.IDS[marker])
    if len(index) < rows:  # cannot happen: index starts with every shifted row
        raise ConversionError("internal error: export rows lost")
    return index, markers
