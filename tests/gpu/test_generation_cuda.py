"""The KV-cached sampler on CUDA: each generated step's logits equal one full forward pass over the prompt and
what was generated (the training-style rows, positions and masks)."""

import pytest
import torch

from megatron_t2c.inference.generator import SUPPRESSED_IDS, Generator, SamplingConfig, full_forward_logits
from megatron_t2c.mrpt import special_tokens as st
from helpers.t2c_model_data import model_config, tiny_model

PROMPTS = [[st.DESCR_ID, 200, 201, 202, st.PYTHON_ID, 20, 21],
           [st.DESCR_ID, 210, st.PYTHON_ID, 22],
           [st.DESCR_ID, 211, 212, 213, 214, 215, 216, 217, st.PYTHON_ID, 23, 24, st.NEW_LINE_ID, st.INDENT_ID, 40]]


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.bfloat16, 5e-2)], ids=["fp32", "bf16"])
@pytest.mark.parametrize("objective", ["text-code", "prefix-code"])
def test_cached_decoding_equals_a_full_forward_pass_on_cuda(cuda_dist, objective, dtype, tol):
    torch.manual_seed(0)
    model = tiny_model("partial", model_config(hidden_size=64, num_attention_heads=4))
    with torch.no_grad():
        for param in model.parameters():  # every weight matters; logits far from uniform
            param.add_(torch.randn_like(param) * 0.3)
    model = model.to(device=cuda_dist, dtype=dtype).eval()
    sampling = SamplingConfig(temperature=0.95, top_p=0.8, max_new_tokens=12, seed=3)
    results = Generator(model, "pangu", objective, max_batch_size=3).generate(PROMPTS, sampling, return_logits=True)
    for prompt, result in zip(PROMPTS, results):
        assert len(result.tokens) > 0 and result.logits.device.type in ("cuda", "cpu")
        full = full_forward_logits(model, prompt + result.tokens, "pangu", objective)
        expected = full[len(prompt) - 1:len(prompt) - 1 + len(result.logits)].clone()
        expected[:, list(SUPPRESSED_IDS)] = float("-inf")
        torch.testing.assert_close(result.logits.float().to(expected.device), expected, atol=tol, rtol=tol)
