"""The chunked tied cross-entropy computes what the model's plain output path computes (issue 8 lever).

Plain path: ``megatron_t2c.models.gpt._TiedOutput`` (code-space rows first, padding columns ``-inf``) then megatron's
``vocab_parallel_cross_entropy``.  Losses and the gradients of the hidden states and of the whole table
(base rows, code rows, padding rows) must agree, for chunks that split the code/base boundary or not.
"""

from __future__ import annotations

import pytest
import torch
from megatron.core import tensor_parallel

from megatron_t2c.models.tied_output import tied_cross_entropy
from megatron_t2c.models.row_layout import RowLayout
from megatron_t2c.models.gpt import _TiedOutput


def _plain(x, weight, layout, n_code, targets):
    logits = _TiedOutput.apply(x, weight, layout.code_output_index(0), n_code, layout.shard_size,
                               layout.first_padding_column(0))
    return tensor_parallel.vocab_parallel_cross_entropy(logits, targets)


def _case(dtype, n=37, h=16, vocab=300, separated=(20, 21, 50, 299)):
    gen = torch.Generator().manual_seed(0)
    layout = RowLayout(list(separated), vocab, 1, 64)  # padded to 320 base columns, code rows after
    weight = torch.randn(layout.table_size, h, generator=gen).to(dtype)
    x = torch.randn(n, h, generator=gen).to(dtype)
    targets = torch.randint(0, vocab, (n,), generator=gen)
    targets[:3] = torch.tensor(separated[:3])
    upstream = torch.rand(n, generator=gen)  # e.g. the loss mask over the token count
    return layout, weight, x, targets, upstream


def _run(fn, weight, x, upstream):
    weight, x = weight.clone().requires_grad_(), x.clone().requires_grad_()
    losses = fn(x, weight)
    (losses * upstream).sum().backward()
    return losses.detach(), x.grad, weight.grad


@pytest.mark.parametrize("n_code", [0, 13, 37])
@pytest.mark.parametrize("chunk", [1, 8, 4096])
def test_chunked_equals_plain_fp32(dist, n_code, chunk):
    layout, weight, x, targets, upstream = _case(torch.float32)
    vocab = layout.first_padding_column(0) or layout.shard_size
    want = _run(lambda x, w: _plain(x, w, layout, n_code, targets), weight, x, upstream)
    got = _run(lambda x, w: tied_cross_entropy(x, w, layout.code_output_index(0), n_code, vocab, targets, chunk),
               weight, x, upstream)
    assert got[0].dtype == torch.float32
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert bool((got[2][vocab:layout.shard_size] == 0).all())  # padding rows get no gradient


def test_chunked_equals_plain_bf16(dist):
    layout, weight, x, targets, upstream = _case(torch.bfloat16)
    want = _run(lambda x, w: _plain(x, w, layout, 13, targets), weight, x, upstream)
    got = _run(lambda x, w: tied_cross_entropy(x, w, layout.code_output_index(0), 13, 300, targets, 8),
               weight, x, upstream)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)  # same bf16 logits, fp32 statistics
    for a, b in zip(got[1:], want[1:]):
        assert a.dtype == b.dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), b.float(), atol=0.1, rtol=2e-2)


def test_chunk_must_be_positive():
    with pytest.raises(ValueError):
        tied_cross_entropy(torch.zeros(1, 2), torch.zeros(3, 2), torch.arange(3), 0, 3, torch.zeros(1), chunk=0)


@pytest.mark.parametrize("mode", ["none", "partial"])
@pytest.mark.parametrize("objective", ["code", "text-code"])
def test_the_model_setting_chooses_the_chunked_head(dist, mode, objective):
    """``ModelConfig(chunked_head=True)``: the model's losses and every gradient equal the plain head's."""
    from helpers.t2c_model_data import make_batch, mean_loss, model_config, tiny_model

    plain = tiny_model(mode)
    chunked = tiny_model(mode, config=model_config(chunked_head=True))
    assert chunked.chunked_head and not plain.chunked_head
    chunked.load_state_dict(plain.state_dict())
    batch = make_batch(0, objective)
    results = []
    for model in (plain, chunked):
        loss = mean_loss(model, batch)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)
    assert results[1][1].keys() == results[0][1].keys()
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, atol=1e-5, rtol=1e-4)
