"""Row layout of the modality-split word-embedding table (paper §2.2, "separation").

A *separated* token has two embedding rows: its base row, used where it appears as natural language or
shared text, and a code row, used where it appears as code.  Labels and predictions stay in base-vocabulary
ids; only the row a token is looked up in, and the rows the tied output layer scores with, change.

The table is an ordinary megatron ``VocabParallelEmbedding`` (the ``GPTModel`` word embedding, built with
``vocab_size = table_size``), laid out so that every token's code row lives on the tensor-parallel rank
that holds its base row.  With ``V`` the tokenizer's vocabulary, ``p`` the tensor-parallel size and ``d``
``make_vocab_size_divisible_by``:

* the base vocabulary is padded as megatron pads it: ``Vp`` = ``V`` rounded up to a multiple of ``d * p``;
  each rank owns the base shard ``S = Vp / p`` (rank ``r``: tokens ``r*S ... r*S + S - 1``);
* rank ``r``'s contiguous block of the table is its ``S`` base rows followed by ``C`` code rows; its first
  ``n_r`` code rows belong to the separated tokens of its own shard, in id order; ``C = max_r n_r`` rounded
  up to a multiple of ``d`` (0 without separation, which gives megatron's own layout);
* ``table_size = p * (S + C)``, so megatron's vocab-parallel split of the table hands rank ``r`` exactly its
  block.  A lookup needs nothing beyond megatron's own all-reduce, and scoring the base vocabulary with code
  rows is a local gather (:meth:`RowLayout.code_output_index`).

Checkpoints hold the table's *canonical* form, independent of ``p`` (see :class:`RowLayout`).  Padding rows
(base ids ``V ... Vp-1`` and unused code slots) are never looked up and never predicted (the model masks
their logits).
"""

from __future__ import annotations

from typing import Sequence

import torch

from megatron_t2c.mrpt.modality import CODE

__all__ = ["RowLayout", "padded_vocab_size"]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def padded_vocab_size(vocab_size: int, tp_size: int, make_vocab_size_divisible_by: int = 128) -> int:
    """Megatron's padded vocabulary: ``vocab_size`` rounded up to a multiple of ``divisible_by * tp_size``."""
    return _round_up(vocab_size, make_vocab_size_divisible_by * tp_size)


class RowLayout:
    """Where each token's base and code rows live in the tensor-parallel word-embedding table.

    The *canonical* form of the table, independent of ``p`` (used by checkpoints, conversions and tests), is
    ``base [V or more, h]`` (rows in token order) plus ``code [K, h]`` (the code rows of the ``K`` separated
    tokens in id order); :meth:`to_local` and :meth:`from_local` convert.  Rank ``r``'s code rows are the
    contiguous slice ``code_offsets[r] : code_offsets[r] + code_counts[r]`` of it.

    Args:
        separated: base ids that get a code row (any order, duplicates ignored); each in ``[0, vocab_size)``.
        vocab_size: the tokenizer's vocabulary size ``V``.
        tp_size: tensor-parallel size ``p``.
        make_vocab_size_divisible_by: megatron's padding unit ``d`` (base vocabulary and code slots).

    Attributes (all plain ints / tuples, fixed at construction):
        separated: sorted tuple of separated ids; ``num_separated`` = ``K``.
        padded_vocab_size: ``Vp``; ``shard_size``: ``S``; ``code_rows_per_rank``: ``C``;
        rows_per_rank: ``S + C``; ``table_size``: ``p * (S + C)``.
        code_counts: ``n_r`` per rank; ``code_offsets``: where rank ``r``'s code rows start in the canonical
        code tensor.
    """

    def __init__(self, separated: Sequence[int], vocab_size: int, tp_size: int,
                 make_vocab_size_divisible_by: int = 128):
        if vocab_size < 1 or tp_size < 1 or make_vocab_size_divisible_by < 1:
            raise ValueError("vocab_size, tp_size and make_vocab_size_divisible_by must be positive")
        ids = torch.as_tensor(list(separated), dtype=torch.long).unique(sorted=True)
        if ids.numel() and (ids[0] < 0 or ids[-1] >= vocab_size):
            raise ValueError(f"separated ids must lie in [0, {vocab_size})")
        self.vocab_size = vocab_size
        self.tp_size = tp_size
        self.make_vocab_size_divisible_by = make_vocab_size_divisible_by
        self.padded_vocab_size = padded_vocab_size(vocab_size, tp_size, make_vocab_size_divisible_by)
        self.shard_size = self.padded_vocab_size // tp_size
        counts = torch.bincount(ids // self.shard_size, minlength=tp_size)
        self.code_counts: tuple[int, ...] = tuple(int(c) for c in counts)
        self.code_offsets: tuple[int, ...] = tuple(int(c) for c in torch.cumsum(counts, 0) - counts)
        self.code_rows_per_rank = _round_up(max(self.code_counts), make_vocab_size_divisible_by)
        self.rows_per_rank = self.shard_size + self.code_rows_per_rank
        self.table_size = tp_size * self.rows_per_rank
        self.separated: tuple[int, ...] = tuple(int(t) for t in ids)
        self.num_separated = len(self.separated)
        self._ids = ids
        self._luts: dict[torch.device, torch.Tensor] = {}  # device -> [2, Vp] row lookup (a cache)

    # ------------------------------------------------------------------------------------------------
    # Global row ids (what the embedding looks up)
    # ------------------------------------------------------------------------------------------------

    @property
    def has_code_rows(self) -> bool:
        """Whether any token is separated (else the table is megatron's own padded vocabulary)."""
        return self.num_separated > 0

    def base_rows(self) -> torch.LongTensor:
        """``[Vp]``: the table row of each base token id."""
        tokens = torch.arange(self.padded_vocab_size)
        return (tokens // self.shard_size) * self.rows_per_rank + tokens % self.shard_size

    def code_rows(self) -> torch.LongTensor:
        """``[K]``: the table row of each separated token's code row (in the order of ``separated``)."""
        rank = self._ids // self.shard_size
        slot = torch.arange(self.num_separated) - torch.as_tensor(self.code_offsets, dtype=torch.long)[rank]
        return rank * self.rows_per_rank + self.shard_size + slot

    def _lut(self, device: torch.device) -> torch.Tensor:
        lut = self._luts.get(device)
        if lut is None:
            base = self.base_rows()
            code = base.clone()
            code[self._ids] = self.code_rows()
            lut = self._luts[device] = torch.stack([base, code]).to(device)
        return lut

    def rows(self, tokens: torch.Tensor, modality: torch.Tensor | int) -> torch.LongTensor:
        """Row ids to feed the embedding: a code-modality token with a code row gets it, others their base row.

        ``tokens`` and ``modality`` (a tensor broadcastable to ``tokens`` or an int) are any shape, any
        device; the result has the shape and device of ``tokens``.  Pure indexing, no host synchronisation.
        """
        lut = self._lut(tokens.device)
        is_code = torch.as_tensor(modality, device=tokens.device) == CODE
        return lut[is_code.long(), tokens.long()]

    # ------------------------------------------------------------------------------------------------
    # One tensor-parallel rank's block
    # ------------------------------------------------------------------------------------------------

    def _check_rank(self, rank: int) -> None:
        if not 0 <= rank < self.tp_size:
            raise ValueError(f"rank {rank} outside tensor-parallel size {self.tp_size}")

    def local_separated(self, rank: int) -> torch.LongTensor:
        """``[n_r]``: local base indices (token id - ``rank * S``) of the rank's separated tokens, in order."""
        self._check_rank(rank)
        start = self.code_offsets[rank]
        return self._ids[start:start + self.code_counts[rank]] - rank * self.shard_size

    def code_output_index(self, rank: int) -> torch.LongTensor:
        """``[S]``: for each base token of the rank's shard, the local row that scores it at a code position.

        Entry ``k`` is ``S + j`` when token ``rank * S + k`` has code row ``j``, else ``k`` (its base row).
        ``weight.index_select(0, index)`` is then the shard's output matrix for code positions.
        """
        index = torch.arange(self.shard_size)
        local = self.local_separated(rank)
        index[local] = self.shard_size + torch.arange(local.numel())
        return index

    def vocab_padding_mask(self, rank: int) -> torch.BoolTensor:
        """``[S]``: True for the rank's base ids that are vocabulary padding (never predicted)."""
        self._check_rank(rank)
        return torch.arange(rank * self.shard_size, (rank + 1) * self.shard_size) >= self.vocab_size

    def first_padding_column(self, rank: int) -> int | None:
        """The first local column of the rank's shard that is vocabulary padding (padding runs to the end)."""
        self._check_rank(rank)
        first = self.vocab_size - rank * self.shard_size
        return None if first >= self.shard_size else max(first, 0)

    @torch.no_grad()
    def init_code_rows(self, weight: torch.Tensor, rank: int) -> None:
        """Set the rank's code rows to copies of their tokens' base rows, in place (``weight``: the block)."""
        self._check_local_shape(weight)
        local = self.local_separated(rank).to(weight.device)
        weight[self.shard_size:self.shard_size + local.numel()] = weight[local]

    def _check_local_shape(self, block: torch.Tensor) -> None:
        if block.shape[0] != self.rows_per_rank:
            raise ValueError(f"expected a block of {self.rows_per_rank} rows, got {tuple(block.shape)}")

    # ------------------------------------------------------------------------------------------------
    # Canonical <-> local
    # ------------------------------------------------------------------------------------------------

    def to_local(self, base: torch.Tensor, code: torch.Tensor | None, rank: int) -> torch.Tensor:
        """Rank ``rank``'s block ``[S + C, h]`` from canonical ``base [>= V, h]`` and ``code [K, h]``.

        Base rows past ``base``'s end and unused code slots are zero.
        """
        self._check_rank(rank)
        block = base.new_zeros(self.rows_per_rank, base.shape[-1])
        start = rank * self.shard_size
        take = max(0, min(self.shard_size, base.shape[0] - start))
        block[:take] = base[start:start + take]
        count = self.code_counts[rank]
        if count:
            if code is None or code.shape[0] != self.num_separated:
                raise ValueError(f"expected {self.num_separated} code rows")
            offset = self.code_offsets[rank]
            block[self.shard_size:self.shard_size + count] = code[offset:offset + count]
        return block

    def from_local(self, block: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(base [S, h], code [n_r, h])``: views of rank ``rank``'s block in canonical order."""
        self._check_rank(rank)
        self._check_local_shape(block)
        return block[:self.shard_size], block[self.shard_size:self.shard_size + self.code_counts[rank]]

    def __repr__(self) -> str:
        return (f"RowLayout(vocab_size={self.vocab_size}, tp_size={self.tp_size}, "
                f"num_separated={self.num_separated}, shard_size={self.shard_size}, "
                f"code_rows_per_rank={self.code_rows_per_rank}, table_size={self.table_size})")
