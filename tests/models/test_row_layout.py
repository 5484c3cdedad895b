"""RowLayout: the modality-split embedding table's rows, per tensor-parallel rank."""

import pytest
import torch

from megatron_t2c.mrpt.modality import CODE, DOCSTRING, SHARED
from megatron_t2c.models.row_layout import RowLayout, padded_vocab_size
from helpers.t2c_model_data import DIVISIBLE_BY, VOCAB, separated

CASES = [(mode, tp) for mode in ("none", "partial", "full") for tp in (1, 2)]


def _layout(mode: str, tp: int) -> RowLayout:
    return RowLayout(separated(mode), VOCAB, tp, DIVISIBLE_BY)


def test_sizes_follow_megatron_padding():
    assert padded_vocab_size(300, 1, 64) == 320 and padded_vocab_size(300, 2, 64) == 384
    assert padded_vocab_size(50257, 8, 128) == 51200
    none = _layout("none", 2)
    assert (none.padded_vocab_size, none.shard_size, none.code_rows_per_rank, none.table_size) == (384, 192, 0, 384)
    assert not none.has_code_rows
    full = _layout("full", 2)  # ids 15..299: 177 on rank 0 (15..191), 108 on rank 1 (192..299)
    assert full.separated == tuple(range(15, VOCAB)) and full.num_separated == 285
    assert full.code_counts == (177, 108) and full.code_offsets == (0, 177)
    assert full.code_rows_per_rank == 192 and full.rows_per_rank == 384 and full.table_size == 768
    one = _layout("full", 1)
    assert (one.shard_size, one.code_rows_per_rank, one.table_size) == (320, 320, 640)
    partial = _layout("partial", 1)
    assert 0 < partial.num_separated < 100  # code rows padded to the divisor (64 here), as the base rows
    assert partial.code_rows_per_rank == 64 * -(-partial.num_separated // 64)
    assert RowLayout([5, 3, 5], 10, 1, 8).separated == (3, 5)
    with pytest.raises(ValueError):
        RowLayout([10], 10, 1)


@pytest.mark.parametrize("mode,tp", CASES)
def test_every_row_lives_on_the_rank_of_its_base_row(mode, tp):
    layout = _layout(mode, tp)
    S, R = layout.shard_size, layout.rows_per_rank
    base = layout.base_rows()
    tokens = torch.arange(layout.padded_vocab_size)
    assert torch.equal(base // R, tokens // S) and torch.equal(base % R, tokens % S)  # the first S of the block
    ids = torch.tensor(layout.separated, dtype=torch.long)
    code = layout.code_rows()
    assert code.numel() == layout.num_separated
    if code.numel():
        assert torch.equal(code // R, ids // S)  # same rank as the base row
        assert bool(((code % R) >= S).all())  # in the code part of the block
        for rank in range(tp):
            slots = code[ids // S == rank] % R - S
            assert torch.equal(slots, torch.arange(layout.code_counts[rank]))  # packed, in id order
    all_rows = torch.cat([base, code])
    assert all_rows.unique().numel() == all_rows.numel() and int(all_rows.max()) < layout.table_size


@pytest.mark.parametrize("mode,tp", CASES)
def test_rows_pick_code_rows_only_for_separated_code_tokens(mode, tp):
    layout = _layout(mode, tp)
    tokens = torch.arange(VOCAB).repeat(3, 1)  # [3, V]: the whole vocabulary in each modality
    modality = torch.tensor([SHARED, DOCSTRING, CODE])[:, None].expand_as(tokens)
    rows = layout.rows(tokens, modality)
    assert rows.shape == tokens.shape and rows.dtype == torch.long
    base = layout.base_rows()[:VOCAB]
    assert torch.equal(rows[0], base) and torch.equal(rows[1], base)
    is_sep = torch.zeros(VOCAB, dtype=torch.bool)
    is_sep[list(layout.separated)] = True
    assert torch.equal(rows[2][~is_sep], base[~is_sep])
    assert torch.equal(rows[2][is_sep], layout.code_rows())
    assert torch.equal(layout.rows(tokens[2], CODE), rows[2])  # an int modality broadcasts
    meta = layout.rows(tokens.to("meta"), modality.to("meta"))  # device-safe: computed where the tokens are
    assert meta.device.type == "meta" and meta.shape == tokens.shape


@pytest.mark.parametrize("mode,tp", CASES)
def test_code_output_index_scores_each_token_once_and_padding_is_marked(mode, tp):
    layout = _layout(mode, tp)
    S = layout.shard_size
    sep = set(layout.separated)
    for rank in range(tp):
        index = layout.code_output_index(rank)
        assert index.shape == (S,)
        tokens = torch.arange(rank * S, (rank + 1) * S)
        has_code = torch.tensor([int(t) in sep for t in tokens])
        assert torch.equal(index[~has_code], torch.arange(S)[~has_code])  # its base row
        assert torch.equal(index[has_code], S + torch.arange(int(has_code.sum())))  # its own code row
        padding = layout.vocab_padding_mask(rank)
        assert torch.equal(padding, tokens >= VOCAB)
        assert not (has_code & padding).any()  # padding never has a code row
        first = layout.first_padding_column(rank)
        assert (first is None) == (not padding.any())
        if first is not None:
            assert bool(padding[first:].all()) and not padding[:first].any()


@pytest.mark.parametrize("mode,tp", CASES)
def test_canonical_round_trip_and_code_row_initialisation(mode, tp):
    layout = _layout(mode, tp)
    hidden = 4
    base = torch.randn(VOCAB, hidden)
    code = torch.randn(layout.num_separated, hidden)
    blocks = [layout.to_local(base, code, rank) for rank in range(tp)]
    assert all(b.shape == (layout.rows_per_rank, hidden) for b in blocks)
    table = torch.cat(blocks)
    assert torch.equal(table[layout.base_rows()[:VOCAB]], base)  # global rows agree with the blocks
    assert torch.equal(table[layout.code_rows()], code)
    pieces = [layout.from_local(b, rank) for rank, b in enumerate(blocks)]
    assert torch.equal(torch.cat([p[0] for p in pieces])[:VOCAB], base)
    assert torch.equal(torch.cat([p[1] for p in pieces]), code)
    for rank, block in enumerate(blocks):
        layout.init_code_rows(block, rank)
    table = torch.cat(blocks)
    ids = list(layout.separated)
    assert torch.equal(table[layout.code_rows()], base[ids])  # code rows start as copies of base rows
    assert torch.equal(table[layout.base_rows()[:VOCAB]], base)
