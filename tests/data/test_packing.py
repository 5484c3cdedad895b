"""Whole-instance packing: next-fit rows, no document cut, padding without loss or attention, the megatron
dataset class (cache, determinism, epochs, blends, splits, resume) and the packing figures."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from megatron_t2c.data.gpt_datasets import StepBatches, build_datasets, packing_figures, samples_per_epoch
from megatron_t2c.data.packing import build_packing_index, next_fit_row_starts, packing_stats
from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.mrpt.objectives import build_batch
from helpers.modality_data import indexed_dataset, pieces

SEQ = 128


def _reference_next_fit(lengths, capacity):
    if not lengths:
        return [0]
    starts, used = [0], 0
    for i, n in enumerate(lengths):
        if used + n > capacity:
            starts.append(i)
            used = 0
        used += n
    return starts + [len(lengths)]


def test_next_fit_equals_a_plain_loop():
    rng = random.Random(0)
    for _ in range(200):
        capacity = rng.randint(1, 60)
        lengths = [rng.randint(1, capacity) for _ in range(rng.randint(0, 80))]
        assert next_fit_row_starts(np.array(lengths, dtype=np.int64), capacity).tolist() == \
            _reference_next_fit(lengths, capacity)


def test_index_drops_long_documents_and_covers_each_epoch_once():
    sizes = np.array([5, 40, 3, 8, 11, 2, 9, 1, 12, 7])  # capacity 11: 40 and 12 do not fit
    docs = np.arange(2, 10)  # a split without documents 0 and 1
    document_index, row_index, stats = build_packing_index(sizes, docs, seq_length=10, seed=3, num_rows=20)
    assert stats.dropped == 1  # document 8 (12 tokens); document 1 is outside the split
    assert (stats.documents, stats.tokens, stats.epochs) == (7, 3 + 8 + 11 + 2 + 9 + 1 + 7, len(document_index) // 7)
    # scattered ids (not a range): the same rules
    order, rows, scattered = build_packing_index(sizes, np.array([2, 4, 6, 8, 9]), 10, 3, None)
    assert sorted(order.tolist()) == [2, 4, 6, 9] and (scattered.dropped, scattered.tokens) == (1, 3 + 11 + 9 + 7)
    kept = [2, 3, 4, 5, 6, 7, 9]
    epochs = len(document_index) // len(kept)
    assert len(document_index) == epochs * len(kept) and len(row_index) - 1 >= 20
    for e in range(epochs):
        assert sorted(document_index[e * len(kept):(e + 1) * len(kept)].tolist()) == kept
    orders = {tuple(document_index[e * len(kept):(e + 1) * len(kept)]) for e in range(epochs)}
    assert len(orders) > 1  # reshuffled per epoch
    for r in range(len(row_index) - 1):
        assert sizes[document_index[row_index[r]:row_index[r + 1]]].sum() <= 11
    again = build_packing_index(sizes, docs, seq_length=10, seed=3, num_rows=20)
    assert all(np.array_equal(a, b) for a, b in zip((document_index, row_index), again[:2]))
    stats = packing_stats(sizes, 10, seed=3, documents=docs)
    assert (stats.documents, stats.dropped, stats.epochs) == (7, 1, 1)
    assert stats.rows == len(next_fit_row_starts(sizes[document_index[:7]], 11)) - 1
    assert stats.padding_fraction == pytest.approx(1 - stats.tokens / (stats.rows * 11))


def _tokenizer():
    from megatron_t2c.tokenizer.sentencepiece import load_tokenizer
    from helpers.t2c_data import tiny_tokenizer

    return load_tokenizer(tiny_tokenizer("bpe"))


def _build(prefixes, weights, cache, sizes=(40, 8, 0), split="90,10,0", packing="whole", seed=5):
    return build_datasets(prefixes, weights, split=split, seq_length=SEQ, sizes=list(sizes), seed=seed,
                          tokenizer=_tokenizer(), cache_path=str(cache), packing=packing)


@pytest.fixture(scope="module")
def stdlib_prefix():
    return indexed_dataset("pangu")


def test_no_row_of_stdlib_data_cuts_a_document(stdlib_prefix, tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    train, valid, _ = _build([stdlib_prefix], None, tmp_path)
    docs = IndexedDataset(stdlib_prefix)
    seen = []
    for i in range(len(train)):
        row = train[i]
        full = torch.cat([row["tokens"][:1], row["labels"]]).numpy()
        ids = train.documents_of(i)
        parts = [docs.get(int(d)) for d in ids]
        n = sum(len(p) for p in parts)
        assert n <= SEQ + 1 and len(ids) >= 1
        assert np.array_equal(full[:n], np.concatenate(parts))  # whole documents, in order
        assert (full[n:] == st.PAD_ID).all()  # then padding only
        assert all(p[-1] == st.EOC_ID for p in parts)
        seen += ids.tolist()
    # the first epoch packs every training document that fits exactly once
    first = seen[:train.stats["documents"]]
    n_docs = len(docs)
    train_docs = range(0, int(round(0.9 * n_docs)))
    fits = [d for d in train_docs if docs.sequence_lengths[d] <= SEQ + 1]
    assert sorted(first) == fits and train.stats["dropped"] == len(train_docs) - len(fits)
    # validation rows come from the validation documents only
    valid_docs = {int(d) for i in range(len(valid)) for d in valid.documents_of(i)}
    assert valid_docs and min(valid_docs) >= int(round(0.9 * n_docs))


def test_padding_has_no_loss_and_no_attention_to_real_tokens(stdlib_prefix, tmp_path):
    train, _, _ = _build([stdlib_prefix], None, tmp_path)
    rows = [train[i] for i in range(len(train))]
    tokens = torch.stack([r["tokens"] for r in rows])
    labels = torch.stack([r["labels"] for r in rows])
    assert (tokens == st.PAD_ID).any()
    for fmt in ("pangu",):
        for objective in ("text-code", "code", "corrupt-code", "prefix-code"):
            batch = build_batch(tokens, labels, fmt, objective, seed=1, sample_ids=torch.arange(len(rows)),
                                vocab_size=len(pieces()))
            pad_label = labels == st.PAD_ID
            assert (batch.loss_mask[pad_label] == 0).all()
            pad_in = tokens == st.PAD_ID
            allowed = ~batch.attention_mask[:, 0]  # [b, s, s]: query, key
            real_to_pad = allowed & (~pad_in)[:, :, None] & pad_in[:, None, :]
            pad_to_real = allowed & pad_in[:, :, None] & (~pad_in)[:, None, :]
            assert not real_to_pad.any() and not pad_to_real.any()


def test_cache_is_deterministic_and_resume_reads_the_same_batches(stdlib_prefix, tmp_path):
    first, _, _ = _build([stdlib_prefix], None, tmp_path / "a")
    files = sorted(os.listdir(tmp_path / "a"))
    assert any(f.endswith("PackedDocumentDataset-train-row_index.npy") for f in files)
    cached, _, _ = _build([stdlib_prefix], None, tmp_path / "a")  # loaded, not rebuilt
    fresh, _, _ = _build([stdlib_prefix], None, tmp_path / "b")
    for other in (cached, fresh):
        assert np.array_equal(first.row_index, other.row_index)
        assert np.array_equal(first.document_index, other.document_index)
    other_seed, _, _ = _build([stdlib_prefix], None, tmp_path / "c", seed=6)
    assert not np.array_equal(first.document_index, other_seed.document_index)
    from megatron_t2c.models.row_layout import RowLayout

    args = dict(fmt="pangu", objective="corrupt-code", micro_batch_size=2, num_microbatches=2, dp_rank=0, dp_size=1,
                layout=RowLayout([], len(pieces()), 1), seed=5, vocab_size=len(pieces()), device=torch.device("cpu"))
    a, b = StepBatches(first, **args), StepBatches(cached, **args)
    for consumed in (0, 4, 12):
        for x, y in zip(a.step(consumed), b.step(consumed)):
            assert all(torch.equal(x[k], y[k]) for k in x)


def test_blends_epochs_and_figures(stdlib_prefix, tmp_path, dist):  # megatron blends need a process group
    other = indexed_dataset("pycodegpt")
    per_epoch = samples_per_epoch([stdlib_prefix], "90,10,0", SEQ, "whole", seed=5)
    train, _, _ = _build([stdlib_prefix, other], [0.7, 0.3], tmp_path, sizes=(3 * per_epoch, 4, 0))
    assert 3 * per_epoch <= len(train) <= 3 * per_epoch + 2  # megatron rounds each part up
    parts = train.datasets
    assert [type(p).__name__ for p in parts] == ["PackedDocumentDataset"] * 2
    assert parts[0].stats["epochs"] >= 2  # 0.7 of three epochs' rows need more than one pass
    assert parts[0].stats["rows"] == per_epoch
    figures = packing_figures(train)
    assert figures["rows"] == sum(p.stats["rows"] for p in parts)
    assert 0 < figures["padding_fraction"] < 1 and figures["documents_per_row"] > 1
    continuous, _, _ = _build([stdlib_prefix], None, tmp_path / "cont", packing="continuous")
    assert packing_figures(continuous) is None


def test_data_summary_reports_the_packing(stdlib_prefix, tmp_path):
    import json

    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_t2c.data.summary import format_markdown, summarise

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pangu_all.summary.json").write_text(json.dumps(
        {"idx": stdlib_prefix + ".idx", "format": "pangu", "include": "all"}))
    summary = summarise(str(tmp_path), seq_length=SEQ)
    entry = summary["datasets"]["dataset-pangu"]["packing"]
    docs = IndexedDataset(stdlib_prefix)  # kept alive: its lengths are a view of its memory map
    want = packing_stats(np.array(docs.sequence_lengths), SEQ)
    assert entry == want.as_dict() and entry["rows"] > 0
    text = format_markdown(summary)
    assert "## Whole-instance packing" in text
    assert f"| dataset-pangu | {SEQ} | {want.rows} | {100 * want.rows_per_document:.1f}% |" in text
