"""Core-attention backends: agreement with megatron's DotProductAttention, masks, dropout, specs."""

import pytest
import torch
from megatron.core import tensor_parallel
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType

from megatron_t2c.models import attention as A
from megatron_t2c.mrpt import objectives as O
from megatron_t2c.mrpt import special_tokens as st
from helpers.t2c_model_data import SEQ, make_batch, model_config, model_inputs, tiny_model

DESCR, PY, EOC, NL = st.DESCR_ID, st.PYTHON_ID, st.EOC_ID, st.NEW_LINE_ID


def _core(cls, config):
    return cls(config=config, layer_number=1, attn_mask_type=AttnMaskType.causal, attention_type="self")


def _qkv(config, seq=SEQ, batch=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    d = config.kv_channels
    q = torch.randn(seq, batch, config.num_attention_heads, d, generator=gen)
    k, v = (torch.randn(seq, batch, config.num_query_groups, d, generator=gen) for _ in range(2))
    return [t.requires_grad_() for t in (q, k, v)]


def _grads(fn, tensors):
    out = fn(*tensors)
    out.backward(torch.ones_like(out))
    grads = [t.grad.clone() for t in tensors]
    for t in tensors:
        t.grad = None
    return out.detach(), grads


@pytest.mark.parametrize("groups", [4, 2], ids=["mha", "gqa"])
def test_sdpa_and_flex_agree_with_megatron_dot_product_attention(dist, groups):
    config = model_config().transformer_config(num_query_groups=groups)
    mask = make_batch(3, "prefix-code", batch=3)["attention_mask"]  # documents + bidirectional prefixes
    assert mask.shape == (3, 1, SEQ, SEQ) and bool(mask.any())
    qkv = _qkv(config)
    unfused, sdpa, flex = (_core(c, config) for c in (DotProductAttention, A.SDPAAttention, A.FlexCoreAttention))
    want, want_grads = _grads(lambda q, k, v: unfused(q, k, v, mask), qkv)
    got, got_grads = _grads(lambda q, k, v: sdpa(q, k, v, mask), qkv)
    assert got.shape == (SEQ, 3, config.hidden_size)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # FlexAttention has no backward on the CPU (torch 2.13)
        q, k, v = (t.detach() for t in qkv)
        torch.testing.assert_close(flex(q, k, v, mask), want, atol=1e-5, rtol=1e-5)
        prepared = A.AttentionMask.prepare(mask, "flex", batch=3, seq_length=SEQ, device=q.device)
        torch.testing.assert_close(flex(q, k, v, prepared), want, atol=1e-5, rtol=1e-5)
        causal = unfused(q, k, v, None)  # no mask: causal
        torch.testing.assert_close(sdpa(q, k, v, None), causal, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(flex(q, k, v, None), causal, atol=1e-5, rtol=1e-5)


def _copy_weights(src, dst):
    dst.load_state_dict(src.state_dict(), strict=True)  # core attention has no parameters of its own


@pytest.mark.parametrize("positions", ["learned_absolute", "rope"])
def test_models_on_every_backend_agree(dist, positions):
    models = {b: tiny_model("partial", model_config(attention_backend=b, position_embedding_type=positions))
              for b in ("sdpa", "unfused", "flex")}
    for backend, model in models.items():
        core = model.decoder.layers[0].self_attention.core_attention
        assert type(core) is {"sdpa": A.SDPAAttention, "unfused": DotProductAttention,
                              "flex": A.FlexCoreAttention}[backend]
        if backend != "sdpa":
            _copy_weights(models["sdpa"], model)
    batch = make_batch(5, "prefix-code")
    inputs = model_inputs(batch, models["sdpa"].layout)
    losses = {}
    for backend in ("sdpa", "unfused"):
        loss = (models[backend](**inputs) * batch["loss_mask"]).sum()
        loss.backward()
        losses[backend] = loss.item()
    assert abs(losses["sdpa"] - losses["unfused"]) < 1e-4
    for (name, p), q in zip(models["sdpa"].named_parameters(), models["unfused"].parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
    logits_inputs = dict(inputs, labels=None, loss_mask=None)
    with torch.no_grad():
        logits = {b: m(**logits_inputs) for b, m in models.items()}
    torch.testing.assert_close(logits["sdpa"], logits["unfused"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits["flex"], logits["sdpa"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_the_mask_is_prepared_once_per_batch_and_shared_by_all_layers(dist, monkeypatch, backend):
    model = tiny_model("partial", model_config(attention_backend=backend))
    calls = []
    original = A.AttentionMask.prepare.__func__
    monkeypatch.setattr(A.AttentionMask, "prepare",
                        classmethod(lambda cls, *a, **k: calls.append(1) or original(cls, *a, **k)))
    seen = []
    for layer in model.decoder.layers:
        layer.self_attention.core_attention.register_forward_pre_hook(lambda m, args: seen.append(args[3]))
    batch = make_batch(1, "prefix-code")
    with torch.no_grad():
        model(**model_inputs(batch, model.layout))
    assert len(calls) == 1 and len(seen) == 2
    assert isinstance(seen[0], A.AttentionMask) and seen[0] is seen[1]
    assert (seen[0].block_mask is not None) == (backend == "flex")


def test_attention_dropout_draws_from_megatrons_rng_tracker(dist):
    config = model_config(attention_dropout=0.5).transformer_config()
    sdpa = _core(A.SDPAAttention, config)
    q, k, v = (t.detach() for t in _qkv(config))

    def run(seed):
        tensor_parallel.model_parallel_cuda_manual_seed(seed)
        return sdpa(q, k, v, None)

    first, again, other = run(7), run(7), run(8)
    assert torch.equal(first, again) and not torch.equal(first, other)
    sdpa.eval()
    assert not torch.equal(sdpa(q, k, v, None), first)
    with pytest.raises(ValueError, match="no attention dropout"):
        _core(A.FlexCoreAttention, config)


def test_backend_names_and_specs():
    from megatron_t2c.models.config import resolve_backend, te_available

    assert resolve_backend("auto") == "sdpa"
    with pytest.raises(ValueError):
        resolve_backend("flash")
    if not te_available():
        with pytest.raises(RuntimeError, match="Transformer Engine"):
            A.layer_spec("te")
    spec = A.layer_spec("flex")
    assert spec.submodules.self_attention.submodules.core_attention.module is A.FlexCoreAttention
    assert spec.submodules.self_attention.params["attn_mask_type"] == AttnMaskType.causal
    assert A.layer_spec("unfused").submodules.self_attention.submodules.core_attention is DotProductAttention


# ----------------------------------------------------------------------------------------------------
# What the masks let through, end to end
# ----------------------------------------------------------------------------------------------------

def _logits(model, tokens, objective="prefix-code"):
    """Logits of a [1, s] row under ``objective``'s attention mask and positions."""
    labels = torch.cat([tokens[:, 1:], tokens[:, :1]], dim=1)
    batch = O.build_batch(tokens, labels, "pangu", objective, seed=0, sample_ids=0, vocab_size=300)._asdict()
    inputs = dict(model_inputs(batch, model.layout), labels=None, loss_mask=None)
    with torch.no_grad():
        return model(**inputs)


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_a_document_never_sees_the_one_before_it(dist, backend):
    model = tiny_model("full", model_config(attention_backend=backend)).eval()
    doc1 = [DESCR, 200, 201, 202, PY, 40, 41, NL, 42, 43, EOC]
    doc2 = [DESCR, 210, 211, PY, 50, 51, NL, 52, 53, 54, 55, EOC]
    tail = [DESCR, 220, 221, PY, 60, 61, 62, 63, 64]
    row = torch.tensor([doc1 + doc2 + tail])
    changed = row.clone()
    changed[0, 1:4] = torch.tensor([230, 231, 232])  # another docstring and code in document 1
    changed[0, 5:7] = torch.tensor([70, 71])
    start, end = len(doc1), len(doc1) + len(doc2)
    for objective in ("text-code", "prefix-code"):
        a, b = _logits(model, row, objective), _logits(model, changed, objective)
        assert torch.equal(a[:, start:], b[:, start:])  # bit-identical
        assert not torch.equal(a[:, :start], b[:, :start])
    assert start < end <= SEQ


def test_prefix_mask_lets_the_docstring_see_itself_both_ways(dist):
    model = tiny_model("partial").eval()
    row = torch.tensor([[DESCR, 200, 201, 202, 203, PY, 40, 41, NL, 42, EOC] + [DESCR, 210, PY, 50] * 5 + [51]])
    changed = row.clone()
    changed[0, 4] = 250  # the last docstring token
    prefix = _logits(model, row), _logits(model, changed)
    assert not torch.equal(prefix[0][:, 1:4], prefix[1][:, 1:4])  # earlier docstring positions see it
    causal = _logits(model, row, "text-code"), _logits(model, changed, "text-code")
    assert torch.equal(causal[0][:, :4], causal[1][:, :4])
    assert not torch.equal(causal[0][:, 4:], causal[1][:, 4:])



def _dense_reference(q, k, v, allowed, scale):
    """Softmax attention over ``allowed`` ([b or 1, 1, sq, sk], True = may attend), written out."""
    scores = torch.einsum("sbnd,tbnd->bnst", q, k) * scale
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    out = torch.einsum("bnst,tbnd->sbnd", probs, v)
    return out.reshape(out.shape[0], out.shape[1], -1)


@pytest.mark.parametrize("masked", ["documents+prefix", "causal"])
def test_sliding_window_layers(dist, masked):
    """megatron's window_size=(left, 0) on the layers window_attn_skip_freq picks (GPT-Neo: every second layer
    local): a query sees only the ``left`` keys before it, within the batch's document/prefix mask; the other
    layers are untouched; softmax_scale is honoured (GPT-Neo does not scale scores)."""
    left = 5
    config = model_config().transformer_config(window_size=(left, 0), window_attn_skip_freq=[0, 1, 0, 1],
                                               softmax_scale=1.0)
    mask = make_batch(3, "prefix-code", batch=3)["attention_mask"] if masked != "causal" else None
    allowed = (~mask if mask is not None else torch.ones(SEQ, SEQ, dtype=torch.bool).tril()[None, None])
    band = torch.arange(SEQ)[:, None] - torch.arange(SEQ)[None, :] <= left
    qkv = _qkv(config)

    def core(cls, layer):
        return cls(config=config, layer_number=layer, attn_mask_type=AttnMaskType.causal, attention_type="self")

    for layer, window in ((1, None), (2, left), (3, None), (4, left)):
        sdpa, flex = core(A.SDPAAttention, layer), core(A.FlexCoreAttention, layer)
        assert sdpa.window == flex.window == window and sdpa.softmax_scale == 1.0
        visible = allowed & band if window is not None else allowed
        want, want_grads = _grads(lambda q, k, v: _dense_reference(q, k, v, visible, 1.0), qkv)
        got, got_grads = _grads(lambda q, k, v: sdpa(q, k, v, mask), qkv)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        for g, w in zip(got_grads, want_grads):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            q, k, v = (t.detach() for t in qkv)
            prepared = A.AttentionMask.prepare(mask, "flex", batch=3, seq_length=SEQ, device=q.device)
            torch.testing.assert_close(flex(q, k, v, prepared), want, atol=1e-5, rtol=1e-5)
    # a key more than `left` positions back has no influence on a local layer's output at that query
    q, k, v = (t.detach().clone().requires_grad_() for t in qkv)
    out = core(A.SDPAAttention, 2)(q, k, v, None)
    out[SEQ - 1].sum().backward()
    assert k.grad[:SEQ - 1 - left].abs().max() == 0 and k.grad[SEQ - 1 - left:].abs().max() > 0


def test_sliding_window_under_a_kv_cache(dist):
    """Decoding one query against a longer key cache: the window counts back from the query's position."""
    left = 4
    config = model_config().transformer_config(window_size=(left, 0))
    q, k, v = (t.detach() for t in _qkv(config))
    sdpa = A.SDPAAttention(config=config, layer_number=1, attn_mask_type=AttnMaskType.causal,
                           attention_type="self")
    full = sdpa(q, k, v, None)
    last = sdpa(q[-1:], k, v, None)  # the newest position against the whole cache
    torch.testing.assert_close(last, full[-1:], atol=1e-5, rtol=1e-5)
