"""FlexAttention and SDPA on CUDA: forward and backward equal megatron's dense DotProductAttention on packed
documents with bidirectional docstring prefixes, in bf16 (tolerance calibrated by the dense kernel's own bf16
error against fp32)."""

import pytest
import torch
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType

from megatron_t2c.models import attention as A
from helpers.t2c_model_data import make_batch, model_config

SEQ, BATCH, HEADS, HEAD_DIM = 256, 4, 8, 64


def _core(cls, config):
    return cls(config=config, layer_number=1, attn_mask_type=AttnMaskType.causal, attention_type="self").cuda()


def _run(core, qkv, mask, dtype):
    q, k, v = (t.detach().to(dtype).requires_grad_() for t in qkv)
    out = core(q, k, v, mask)
    out.float().pow(2).sum().backward()  # a gradient that depends on the output
    return [out.detach().float()] + [t.grad.float() for t in (q, k, v)]


def _max_err(got, want):
    return max(float((g - w).abs().max()) for g, w in zip(got, want))


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_backend_equals_the_dense_reference_forward_and_backward_in_bf16(cuda_dist, backend):
    config = model_config(hidden_size=HEADS * HEAD_DIM, num_attention_heads=HEADS, seq_length=SEQ,
                          attention_backend=backend).transformer_config()
    mask = make_batch(3, "prefix-code", batch=BATCH, seq=SEQ)["attention_mask"].cuda()  # documents + prefixes
    assert bool(mask.any()) and not bool(mask.all(-1).any())  # every row keeps a visible key
    gen = torch.Generator(device="cuda").manual_seed(0)
    qkv = [torch.randn(SEQ, BATCH, HEADS, HEAD_DIM, device="cuda", generator=gen) for _ in range(3)]
    dense = _core(DotProductAttention, config)
    ours = _core({"sdpa": A.SDPAAttention, "flex": A.FlexCoreAttention}[backend], config)
    reference = _run(dense, qkv, mask, torch.float32)
    dense_bf16 = _run(dense, qkv, mask, torch.bfloat16)
    got = _run(ours, qkv, mask, torch.bfloat16)
    prepared = A.AttentionMask.prepare(mask, backend, batch=BATCH, seq_length=SEQ, device=mask.device)
    got_prepared = _run(ours, qkv, prepared, torch.bfloat16)
    tolerance = max(2 * _max_err(dense_bf16, reference), 2e-2)
    assert _max_err(got, reference) <= tolerance, (_max_err(got, reference), tolerance)
    assert _max_err(got_prepared, reference) <= tolerance
    # and in fp32 the kernels agree closely
    torch.testing.assert_close(_run(ours, qkv, mask, torch.float32)[0], reference[0], atol=2e-3, rtol=2e-3)
