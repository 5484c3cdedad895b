"""Whole-instance packing (paper Appendix B.3): which documents fill each row, and the figures of a packing.

"We shuffle the data and start appending examples until the maximum sequence length is reached, forming a
new sample.  If appending an instance exceeds the maximum sequence length, then we continue forming the next
sample."  A row holds ``seq_length + 1`` tokens (``tokens = row[:-1]``, ``labels = row[1:]``, as megatron's
``GPTDataset``); documents end with their ``[eoc]``, so a row whose documents fill it exactly has its last
``[eoc]`` as the last label.  No document is ever split; one longer than a row is dropped and counted (the
release drops them; ``t2c preprocess --max-seq-length`` already leaves them out).  The rest of a row is
padding (``<pad>``, id 0): no loss (its labels are ``<pad>``) and, being after the row's last ``[eoc]``, no
attention to or from a real token (:func:`megatron_t2c.mrpt.objectives.attention_mask` is per document).

Epoch ``e`` shuffles the kept documents with ``numpy.random.default_rng((seed, e))`` and packs them next-fit in
that order; so the rows of every epoch differ, and the same seed gives the same rows on every machine.
:func:`next_fit_row_starts` is vectorised: one ``searchsorted`` gives, for every document, the first one
that would not fit in a row starting there; the rows are then the chain of those jumps from document 0,
walked 32 rows per Python step (:func:`next_fit_row_starts`).
"""

from __future__ import annotations

import array
import dataclasses

import numpy as np

__all__ = ["PackingStats", "next_fit_row_starts", "pack_epoch", "build_packing_index", "packing_stats"]


def next_fit_row_starts(lengths: np.ndarray, capacity: int) -> np.ndarray:
    """Offsets into ``lengths`` where each row begins (plus ``len(lengths)`` at the end), packing next-fit.

    Every length must be in ``[1, capacity]``.
    """
    lengths = np.asarray(lengths)
    n = len(lengths)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    ends = np.cumsum(lengths, dtype=np.int64)
    index_type = np.int32 if n < 2**31 - 1 else np.int64
    jump = np.empty(n + 1, dtype=index_type)  # jump[n] = n: the chain stays at the end once there
    jump[:n] = np.searchsorted(ends, ends - lengths + capacity, side="right")
    jump[n] = n
    # The chain 0, jump[0], jump[jump[0]], ... is walked BLOCK rows at a time: jump^BLOCK by repeated
    # squaring, a short Python walk over every BLOCK-th row start, then the rows in between vectorised.
    far = jump
    for _ in range(_BLOCK_BITS):
        far = far[far]
    far_view = memoryview(far)
    coarse = array.array("q")
    i = 0
    while i < n:
        coarse.append(i)
        i = far_view[i]
    block = np.empty((len(coarse), 1 << _BLOCK_BITS), dtype=index_type)
    block[:, 0] = np.frombuffer(coarse, dtype=np.int64)
    for k in range(1, block.shape[1]):
        block[:, k] = jump[block[:, k - 1]]
    starts = block.ravel()
    return np.append(starts[starts < n], n).astype(np.int64)


_BLOCK_BITS = 5  # rows per step of the Python walk: 2 ** 5


def pack_epoch(documents: np.ndarray, lengths: np.ndarray, capacity: int, seed: int, epoch: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """``(order, row_starts)`` of one epoch: the documents shuffled (``numpy.random.default_rng((seed,
    epoch))``) and the offsets into ``order`` where rows begin.  ``documents`` are ids whose ``lengths`` fit."""
    order = np.random.default_rng((seed, epoch)).permutation(np.asarray(documents))
    return order, next_fit_row_starts(lengths[order], capacity)


def build_packing_index(sizes: np.ndarray, documents: np.ndarray, seq_length: int, seed: int,
                        num_rows: int | None) -> tuple[np.ndarray, np.ndarray, "PackingStats"]:
    """``(document_index, row_index, stats)`` for at least ``num_rows`` rows (None: one epoch).

    ``sizes[d]`` is document ``d``'s length; ``documents`` the split's document ids.  Row ``r`` holds the
    documents ``document_index[row_index[r]:row_index[r + 1]]``; epochs follow each other.  ``stats`` are
    the figures of the first epoch (documents longer than a row are left out of every epoch).
    """
    capacity = seq_length + 1
    sizes = np.asarray(sizes)
    documents = np.asarray(documents)
    contiguous = len(documents) > 0 and np.array_equal(documents, np.arange(documents[0], documents[-1] + 1))
    split_sizes = sizes[int(documents[0]):int(documents[-1]) + 1] if contiguous else sizes[documents]
    fits = split_sizes <= capacity
    all_fit = bool(fits.all())
    index_type = np.int32 if len(sizes) < 2**31 else np.int64
    if all_fit:
        kept = documents.astype(index_type, copy=False)
        tokens = int(split_sizes.sum(dtype=np.int64))
    else:
        kept = documents[fits].astype(index_type, copy=False)
        tokens = int(split_sizes[fits].sum(dtype=np.int64))
    dropped = int(len(documents) - len(kept))
    if len(kept) == 0:
        return (np.zeros(0, dtype=index_type), np.zeros(1, dtype=np.int64),
                PackingStats(0, dropped, 0, 0, capacity))
    orders, starts, offset, rows, epoch, first_rows = [], [], 0, 0, 0, 0
    while True:
        order, row_starts = pack_epoch(kept, sizes, capacity, seed, epoch)
        orders.append(order)
        starts.append(row_starts[:-1] + offset)
        offset += len(order)
        rows += len(row_starts) - 1
        first_rows = first_rows or rows
        epoch += 1
        if num_rows is None or rows >= num_rows:
            break
    starts.append(np.asarray([offset], dtype=np.int64))
    stats = PackingStats(documents=len(kept), dropped=dropped, rows=first_rows, tokens=tokens, capacity=capacity,
                         epochs=epoch)
    return np.concatenate(orders) if len(orders) > 1 else orders[0], np.concatenate(starts), stats


@dataclasses.dataclass
class PackingStats:
    """The figures of one packing (of one epoch unless said otherwise)."""

    documents: int  # documents packed (those that fit a row)
    dropped: int  # documents longer than a row, left out
    rows: int  # rows of seq_length + 1 tokens
    tokens: int  # real tokens in the rows
    capacity: int  # seq_length + 1
    epochs: int = 1  # epochs in the index the figures come with

    @property
    def documents_per_row(self) -> float:
        return self.documents / self.rows if self.rows else 0.0

    @property
    def padding_fraction(self) -> float:
        """Share of the rows' token slots that are padding."""
        return 1.0 - self.tokens / (self.rows * self.capacity) if self.rows else 0.0

    @property
    def rows_per_document(self) -> float:
        """Rows as a share of the document count (the paper: 18% for MAPT, 24-26% for MRPT)."""
        return self.rows / self.documents if self.documents else 0.0

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "documents_per_row": round(self.documents_per_row, 4),
                "padding_fraction": round(self.padding_fraction, 6),
                "rows_per_document": round(self.rows_per_document, 6)}

    def describe(self) -> str:
        return (f"{self.rows} rows of {self.capacity - 1} tokens from {self.documents} whole documents "
                f"({100 * self.rows_per_document:.1f}% of the document count; {self.documents_per_row:.2f} "
                f"documents per row; padding {100 * self.padding_fraction:.1f}% of the row tokens; "
                f"{self.dropped} documents longer than a row dropped)")


def packing_stats(sizes: np.ndarray, seq_length: int, seed: int = 1234,
                  documents: np.ndarray | None = None) -> PackingStats:
    """The figures of epoch 0's packing of ``documents`` (default: all) of lengths ``sizes``."""
    documents = np.arange(len(sizes)) if documents is None else np.asarray(documents)
    return build_packing_index(sizes, documents, seq_length, seed, None)[2]
