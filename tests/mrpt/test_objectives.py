"""MRPT objectives on packed rows: documents and positions, loss masks, attention masks, corruption, batches."""

import warnings

import pytest
import torch

from megatron_t2c.mrpt import objectives as O
from megatron_t2c.mrpt import special_tokens as st
from megatron_t2c.mrpt.modality import CODE, DOCSTRING, SHARED, modality_ids
from helpers.modality_data import packed, reference_segments, tokenizer

DESCR, PY, EOC, SOS, NL, IND, DED, PAD, MASK = (st.DESCR_ID, st.PYTHON_ID, st.EOC_ID, st.SOS_ID, st.NEW_LINE_ID,
                                                st.INDENT_ID, st.DEDENT_ID, st.PAD_ID, st.MASK_ID)
a, b, c, x, y, z = 300, 301, 302, 400, 401, 402
VOCAB = 1500


def _row(ids):
    """tokens, labels of one hand-built row (the last id is only a label)."""
    t = torch.tensor(ids)
    return t[:-1], t[1:]


def _megatron_masks(tokens):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.gpt_dataset import _get_ltor_masks_and_position_ids
    return _get_ltor_masks_and_position_ids(tokens, EOC, True, True, False, True)


# ----------------------------------------------------------------------------------- documents, positions

def test_documents_and_positions_hand_built():
    tokens = torch.tensor([a, b, EOC, DESCR, a, PY, x, EOC, PY, x])
    assert O.document_ids(tokens).tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 2, 2]
    assert O.position_ids(tokens).tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 0, 1]
    assert O.position_ids(torch.tensor([EOC, EOC, a])).tolist() == [0, 0, 0]


@pytest.mark.parametrize("fmt", ["pangu", "pycodegpt"])
def test_positions_and_causal_masks_equal_megatron_gpt_dataset(fmt):
    """reset_position_ids / reset_attention_mask of megatron-core's GPTDataset, on real packed rows."""
    tokens, labels, _ = packed(fmt, 64, max_rows=60)
    positions = O.position_ids(tokens)
    for objective in ("text-code", "code", "corrupt-code"):
        mask = O.attention_mask(tokens, fmt, objective, labels=labels)
        assert mask.shape == (60, 1, 64, 64) and mask.dtype == torch.bool
        for i in range(0, 60, 7):
            ref_mask, _, ref_pos = _megatron_masks(tokens[i])
            assert torch.equal(positions[i], ref_pos)
            assert torch.equal(mask[i], ref_mask)
    assert (positions == 0).sum() > 60  # several documents per row


# ------------------------------------------------------------------------------------------------ loss

PANGU_ROW = [DESCR, a, b, PY, x, NL, IND, y, DED, EOC, PY, z, EOC, DESCR, a]
PYCODEGPT_ROW = [SOS, x, y, DESCR, a, PY, z, NL, EOC, SOS, x, PY, y, EOC, SOS]


@pytest.mark.parametrize("fmt,row,code,prefix_code", [
    # labels:     a  b  PY x  NL IND y  DED EOC PY z  EOC DESCR a
    ("pangu", PANGU_ROW, [0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0], None),
    # labels:        x  y  DESCR a  PY z  NL EOC SOS x  PY y  EOC SOS
    # PyCodeGPT: never [sos], the signature, [descr], the docstring or [python] (as the release's collator)
    ("pycodegpt", PYCODEGPT_ROW, [0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0], None),
])
def test_loss_masks_hand_built(fmt, row, code, prefix_code):
    """Code labels (specials inside code too) and the closing [eoc]; never the opening markers."""
    tokens, labels = _row(row)
    assert O.loss_mask(tokens, labels, fmt, "text-code").tolist() == [1.0] * len(labels)
    assert O.loss_mask(tokens, labels, fmt, "code").int().tolist() == code
    assert O.loss_mask(tokens, labels, fmt, "corrupt-code").int().tolist() == code
    assert O.loss_mask(tokens, labels, fmt, "prefix-code").int().tolist() == (prefix_code or code)
    assert O.loss_mask(tokens, labels, fmt, "code").dtype == torch.float32


def test_padding_labels_never_trained():
    tokens, labels = _row([PY, x, y, EOC, PAD, PAD])
    for objective in O.OBJECTIVES:
        mask = O.loss_mask(tokens, labels, "pangu", objective)
        assert mask[3:].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="unknown objective"):
        O.loss_mask(tokens, labels, "pangu", "mlm")


@pytest.mark.parametrize("fmt", ["pangu", "pycodegpt"])
def test_loss_masks_on_real_rows(fmt):
    tokens, labels, _ = packed(fmt, 128, max_rows=200)
    full = torch.cat([tokens[:, :1], labels], dim=1)
    seg_after = torch.tensor([reference_segments(r, fmt) for r in full.tolist()])
    label_seg, before = seg_after[:, 1:], seg_after[:, :-1]
    code = O.loss_mask(tokens, labels, fmt, "code").bool()
    assert torch.equal(O.loss_mask(tokens, labels, fmt, "corrupt-code").bool(), code)
    assert O.loss_mask(tokens, labels, fmt, "text-code").bool().all()
    # trained: labels inside code (ordinary or special) and the [eoc] that closes code; nothing else
    # (PyCodeGPT: not the signature, which sits in the prefix before [python])
    opening = torch.isin(labels, torch.tensor([SOS, DESCR, PY]))
    expected = ((label_seg == CODE) & ~opening) | ((labels == EOC) & (before == CODE))
    if fmt == "pycodegpt":
        expected &= ~O.prefix_mask(full, fmt)[:, 1:]
    assert torch.equal(code, expected)
    assert code[torch.isin(labels, torch.tensor([NL, IND, DED]))].all()
    assert code[labels == EOC].all() and not code[modality_ids(full, fmt)[:, 1:] == DOCSTRING].any()
    prefix = O.loss_mask(tokens, labels, fmt, "prefix-code").bool()
    assert torch.equal(prefix, code)  # PanGu: the prefix holds no code; PyCodeGPT: neither objective trains it
    if fmt == "pycodegpt":
        signature = (label_seg == CODE) & (O.prefix_mask(full, fmt)[:, 1:])
        assert signature.any() and not code[signature].any()
    assert 0.3 < code.float().mean() < 0.95


@pytest.mark.parametrize("objective", ["code", "corrupt-code"])
def test_pycodegpt_code_loss_starts_after_python(objective):
    """A plain walk over every document that starts in a row: no loss on a label from its [sos] through its
    [python]; loss on every label after [python] through the closing [eoc]."""
    tokens, labels, _ = packed("pycodegpt", 128, max_rows=200)
    mask = O.loss_mask(tokens, labels, "pycodegpt", objective).tolist()
    full = torch.cat([tokens[:, :1], labels], dim=1).tolist()
    checked = 0
    for row, m in zip(full, mask):
        state = None  # None: before the first [sos] of the row (a document begun in an earlier row)
        for j, token in enumerate(row):
            if token == SOS:
                state = "prefix"
            if j > 0 and state is not None:
                assert m[j - 1] == (0.0 if state == "prefix" else 1.0), (j, token, state)
                checked += 1
            if token == PY and state == "prefix":
                state = "body"
            elif token == EOC:
                state = None
    assert checked > 1000


# ------------------------------------------------------------------------------------------- attention

def _allowed(mask):
    return ~mask.squeeze(-3)


@pytest.mark.parametrize("fmt,row,prefix", [
    ("pangu", PANGU_ROW[:-1], [0, 1, 2, 3]),  # [descr] a b [python]
    ("pycodegpt", PYCODEGPT_ROW[:-1], [0, 1, 2, 3, 4, 5]),  # [sos] x y [descr] a [python]
])
def test_prefix_span_hand_built(fmt, row, prefix):
    tokens = torch.tensor(row)
    in_prefix = O.prefix_mask(tokens, fmt)
    assert in_prefix.nonzero().flatten().tolist()[:len(prefix)] == prefix
    allowed = _allowed(O.attention_mask(tokens, fmt, "prefix-code"))
    causal = _allowed(O.attention_mask(tokens, fmt, "code"))
    n, end = len(prefix), row.index(EOC) + 1
    assert allowed[:n, :n].all()  # the prefix sees itself both ways
    assert torch.equal(allowed[n:end], causal[n:end])  # the rest of the document is causal
    assert not allowed[:n, n:].any()
    # a code-only document's prefix: [python] alone (PanGu), [sos] signature [python] (PyCodeGPT)
    if fmt == "pangu":
        assert in_prefix[10:].tolist() == [True, False, False, True]  # ... [python] z [eoc] [descr]
    else:
        assert in_prefix[9:].tolist() == [True, True, True, False, False]
        assert allowed[9:12, 9:12].all() and not allowed[9:12, :9].any()


@pytest.mark.parametrize("fmt", ["pangu", "pycodegpt"])
def test_attention_on_real_rows(fmt):
    tokens, labels, _ = packed(fmt, 96, max_rows=40)
    docs = O.document_ids(tokens)
    same_doc = docs[:, :, None] == docs[:, None, :]
    causal = torch.ones(96, 96, dtype=torch.bool).tril()
    base = _allowed(O.attention_mask(tokens, fmt, "text-code", labels=labels))
    assert torch.equal(base, same_doc & causal)
    for objective in ("code", "corrupt-code"):
        assert torch.equal(_allowed(O.attention_mask(tokens, fmt, objective, labels=labels)), base)
    prefix_lm = _allowed(O.attention_mask(tokens, fmt, "prefix-code", labels=labels))
    assert not (prefix_lm & ~same_doc).any()  # never across documents
    extra = prefix_lm & ~base  # the only additions: later prefix keys of the same document
    p = O.prefix_mask(torch.cat([tokens, labels[:, -1:]], 1), fmt)[:, :-1]
    assert extra.any() and torch.equal(extra, same_doc & p[:, :, None] & p[:, None, :] & ~causal)


def _toy_attention(tokens, mask, dim=8):
    """One attention layer over fixed random token embeddings: what each position sees."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(VOCAB, dim, generator=g)
    h = table[tokens][None, None]
    return torch.nn.functional.scaled_dot_product_attention(h, h, h, attn_mask=~mask)[0, 0]


@pytest.mark.parametrize("fmt", ["pangu", "pycodegpt"])
def test_later_docstring_token_reaches_earlier_positions_only_in_prefix_code(fmt):
    tok = tokenizer()
    text = "[descr] Return the sum of two numbers. [python] def add(a, b): [new_line] [indent] return a + b [eoc]"
    if fmt == "pycodegpt":
        text = "[sos] def add(a, b): [descr] Return the sum of two numbers. [python] [indent] return a + b [eoc]"
    tokens = torch.tensor(tok.tokenize(text))
    doc = (modality_ids(tokens, fmt) == DOCSTRING).nonzero().flatten()
    late = int(doc[-1])
    changed = tokens.clone()
    changed[late] = 1000 if tokens[late] != 1000 else 1001
    for objective in O.OBJECTIVES:
        before = _toy_attention(tokens, O.attention_mask(tokens, fmt, objective))
        after = _toy_attention(changed, O.attention_mask(changed, fmt, objective))
        differs = (before - after).abs().amax(-1) > 1e-6
        earlier = differs[:late]
        if objective == "prefix-code":
            assert earlier.all()  # every earlier prefix position sees the change
        else:
            assert not earlier.any()
        assert differs[late:].all()


# ------------------------------------------------------------------------------------------ corruption

def _docstring_rows():
    tokens, labels, _ = packed("pangu", 128, include="text-code", max_rows=400)
    return tokens, modality_ids(torch.cat([tokens, labels[:, -1:]], 1), "pangu")[:, :-1]


def test_corruption_rates_over_100k_docstring_tokens():
    tokens, modality = _docstring_rows()
    reps = -(-100_000 // int((modality == DOCSTRING).sum()))
    tokens, modality = tokens.repeat(reps, 1), modality.repeat(reps, 1)
    sample_ids = torch.arange(len(tokens))
    doc = modality == DOCSTRING
    n = int(doc.sum())
    assert n >= 100_000

    def rates(rate):
        out = O.corrupt(tokens, modality, seed=7, sample_ids=sample_ids, vocab_size=VOCAB, rate=rate)
        assert torch.equal(out[~doc], tokens[~doc])  # code and shared tokens never change
        masked = (out == MASK) & doc
        replaced = (out != tokens) & ~masked
        return out, masked.sum().item() / n, replaced.sum().item() / n

    out, masked, replaced = rates(0.15)
    tol = lambda p: 4 * (p * (1 - p) / n) ** 0.5
    assert abs(masked - 0.15 * 0.8) < tol(0.12)
    assert abs(replaced - 0.15 * 0.1) < tol(0.015)
    # every docstring token selected: the 80/10/10 split itself
    out, masked, replaced = rates(1.0)
    assert abs(masked - 0.8) < tol(0.8) and abs(replaced - 0.1) < tol(0.1)
    assert abs((1 - masked - replaced) - 0.1) < tol(0.1) + 1 / VOCAB
    new = out[(out != tokens) & (out != MASK)]
    assert new.min() >= 15 and new.max() < VOCAB  # ordinary ids only, byte pieces included
    assert (new < 271).any() and (new > VOCAB - 100).any()
    counts = torch.bincount(new - 15, minlength=VOCAB - 15).float()
    assert 0.85 < counts.var() / counts.mean() < 1.15  # uniform over the ordinary ids: Poisson-like dispersion


def _splitmix64(v):
    m = (1 << 64) - 1
    v = (v + 0x9E3779B97F4A7C15) & m
    v = ((v ^ (v >> 30)) * 0xBF58476D1CE4E5B9) & m
    v = ((v ^ (v >> 27)) * 0x94D049BB133111EB) & m
    return v ^ (v >> 31)


def test_hash_is_bit_exact_splitmix64():
    """The torch int64 arithmetic (wrapping products, logical shifts) equals SplitMix64 on Python ints."""
    seed, samples, length = 2**40 + 3, torch.tensor([0, 5, 2**62 + 1, -7]), 50
    for stream in (1, 2, 3):
        got = O.position_hash(seed, samples, length, stream)
        for i, s in enumerate(samples.tolist()):
            row = _splitmix64((s + seed) & ((1 << 64) - 1))
            for p in range(0, length, 7):
                want = _splitmix64((_splitmix64((row + p) & ((1 << 64) - 1)) + stream) & ((1 << 64) - 1))
                assert got[i, p].item() & ((1 << 64) - 1) == want


def test_corruption_is_reproducible_per_sample():
    tokens, modality = _docstring_rows()
    tokens, modality = tokens[:32], modality[:32]
    ids = torch.arange(1000, 1032)
    kw = dict(vocab_size=VOCAB)
    one = O.corrupt(tokens, modality, seed=3, sample_ids=ids, **kw)
    assert torch.equal(one, O.corrupt(tokens, modality, seed=3, sample_ids=ids, **kw))
    # a sample's corruption does not depend on the batch it is in (another rank, another micro-batch)
    for i in (0, 17):
        alone = O.corrupt(tokens[i], modality[i], seed=3, sample_ids=int(ids[i]), **kw)
        assert torch.equal(alone, one[i])
    shifted = O.corrupt(tokens, modality, seed=3, sample_ids=ids + 1, **kw)
    assert not torch.equal(shifted, one)
    assert not torch.equal(O.corrupt(tokens, modality, seed=4, sample_ids=ids, **kw), one)
    # the same row content under two sample ids is corrupted differently
    same = tokens[:1].repeat(2, 1)
    pair = O.corrupt(same, modality[:1].repeat(2, 1), seed=3, sample_ids=torch.tensor([1, 2]), **kw)
    assert not torch.equal(pair[0], pair[1])
    assert one.dtype == tokens.dtype
    assert O.corrupt(tokens.int(), modality, seed=3, sample_ids=ids, **kw).dtype == torch.int32


# ------------------------------------------------------------------------------------------------ batch

@pytest.mark.parametrize("fmt", ["pangu", "pycodegpt"])
@pytest.mark.parametrize("objective", O.OBJECTIVES)
def test_build_batch(fmt, objective):
    tokens, labels, _ = packed(fmt, 64, max_rows=8)
    batch = O.build_batch(tokens, labels, fmt, objective, seed=1, sample_ids=torch.arange(8), vocab_size=VOCAB)
    assert batch._fields == ("input_ids", "labels", "loss_mask", "position_ids", "attention_mask", "modality",
                             "label_modality")
    assert batch.attention_mask.shape == (8, 1, 64, 64)
    assert all(getattr(batch, f).shape == (8, 64) for f in batch._fields if f != "attention_mask")
    assert torch.equal(batch.labels, labels)
    assert torch.equal(batch.loss_mask, O.loss_mask(tokens, labels, fmt, objective))
    full = torch.cat([tokens, labels[:, -1:]], 1)
    assert torch.equal(batch.modality, modality_ids(full, fmt)[:, :-1])
    # the output space is the label's modality for every ordinary label, code wherever code is trained
    ordinary = labels >= 15
    assert torch.equal(batch.label_modality[ordinary], modality_ids(full, fmt)[:, 1:][ordinary])
    assert (batch.label_modality[batch.loss_mask.bool()] == CODE).all() or objective == "text-code"
    changed = batch.input_ids != tokens
    if objective == "corrupt-code":
        assert changed.any() and (batch.modality[changed] == DOCSTRING).all()
        # corruption changes no document structure: modality of the corrupted input is the original's
        expected = torch.where(batch.input_ids == MASK, SHARED, batch.modality)
        assert torch.equal(modality_ids(batch.input_ids, fmt), expected)
    else:
        assert not changed.any()


def test_attends_ranges():
    tokens = torch.tensor([DESCR, a, PY, x, EOC, PY, y])
    ranges = O.attends(O.attention_mask(tokens, "pangu", "prefix-code"))
    assert ranges == [[[0, 3]], [[0, 3]], [[0, 3]], [[0, 4]], [[0, 5]], [[5, 6]], [[5, 7]]]
    assert O.attends(torch.tensor([[False, True, False]] * 3)) == [[[0, 1], [2, 3]]] * 3


def test_no_host_synchronisation():
    """Everything runs on the meta device, where a data-dependent host read would fail."""
    tokens = torch.empty(2, 32, dtype=torch.long, device="meta")
    for fmt in ("pangu", "pycodegpt"):
        for objective in O.OBJECTIVES:
            batch = O.build_batch(tokens, tokens, fmt, objective, seed=5,
                                  sample_ids=torch.empty(2, dtype=torch.long, device="meta"), vocab_size=VOCAB)
            assert batch.attention_mask.shape == (2, 1, 32, 32) and batch.input_ids.device.type == "meta"
