"""The CPU compatibility layer: megatron-core 0.16.1 GPT training pieces run, and behave, on one CPU rank."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from megatron.core import parallel_state
from megatron.core.optimizer.clip_grads import clip_grad_by_total_norm_fp32, get_grad_norm_fp32
from megatron.core.tensor_parallel.random import get_cuda_rng_tracker, model_parallel_cuda_manual_seed
from helpers.megatron_gpt import VOCAB, full_weights, lm_loss, load_full_weights, make_batch, tiny_config, tiny_gpt

from megatron_t2c.runtime import cpu_compat


def _patched_objects() -> dict[str, object]:
    """The live object behind every entry of cpu_compat.PATCHES, by its path."""
    objects = {}
    for module_name, path, _rewrite, _why in cpu_compat.PATCHES:
        owner, name = cpu_compat._resolve(module_name, path)
        value = vars(owner)[name] if isinstance(owner, type) else getattr(owner, name)
        objects[path] = getattr(value, "__func__", value)
    return objects


# ----------------------------------------------------------------------------------------------------
# The layer itself
# ----------------------------------------------------------------------------------------------------

def test_enable_cpu_compat_is_idempotent_and_applies_every_patch(dist):
    before = _patched_objects()
    cpu_compat.enable_cpu_compat()
    cpu_compat.enable_cpu_compat()
    after = _patched_objects()
    assert cpu_compat.is_enabled() and cpu_compat.is_cpu_run() and cpu_compat.device() == torch.device("cpu")
    assert after == before  # a second call wraps nothing twice
    assert [path for path, value in after.items() if not getattr(value, cpu_compat._WRAPPED, False)] == []


def test_modules_that_imported_a_patched_function_see_the_patch(dist):
    from megatron.core import dist_checkpointing
    from megatron.core.optimizer import clip_grads, optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func, schedules

    assert optimizer.get_grad_norm_fp32 is clip_grads.get_grad_norm_fp32
    assert getattr(optimizer.clip_grad_by_total_norm_fp32, cpu_compat._WRAPPED)
    assert getattr(dist_checkpointing.save, cpu_compat._WRAPPED)  # the package re-exports serialization.save
    assert get_forward_backward_func() is schedules.forward_backward_no_pipelining
    assert getattr(schedules.forward_backward_no_pipelining, cpu_compat._WRAPPED)


def test_cuda_means_cpu_only_inside_a_scope(dist):
    with cpu_compat.cuda_means_cpu():
        t = torch.zeros(3, device="cuda")
        assert t.device.type == "cpu"
        assert torch.empty(2, device=torch.cuda.current_device()).device.type == "cpu"
        assert t.cuda() is t and t.to("cuda").device.type == "cpu"
        assert t.type() == "torch.cuda.FloatTensor"  # what upstream type checks look for
        assert t.type(torch.float64).dtype == torch.float64
        torch.cuda.synchronize()
    assert t.type() == "torch.FloatTensor"
    if not torch.cuda.is_available():  # outside a scope torch.cuda is stock: it still refuses
        with pytest.raises((AssertionError, RuntimeError)):
            torch.cuda.current_device()
        with pytest.raises((AssertionError, RuntimeError)):
            torch.zeros(1, device="cuda")


_STOCK_PROBE = """
import torch
from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
from megatron.core.tensor_parallel.random import CudaRNGStatesTracker
from megatron.core.utils import GlobalMemoryBuffer
probes = {
    "rng tracker": lambda: CudaRNGStatesTracker().add("x", 1),
    "attention buffer": lambda: GlobalMemoryBuffer().get_tensor((2,), torch.float32, "x"),
    "rope": lambda: RotaryEmbedding(8, 1.0, use_cpu_initialization=True).get_emb(4),
}
failed = []
for name, probe in probes.items():
    try:
        probe()
    except Exception:
        failed.append(name)
print("FAILED:" + ",".join(failed))
"""


def test_stock_megatron_needs_cuda_where_compat_patches():
    """Without the layer (fresh interpreter) these upstream pieces fail on CPU-only torch: the patches matter."""
    result = subprocess.run([sys.executable, "-c", _STOCK_PROBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    failed = result.stdout.strip().rsplit("FAILED:", 1)[-1]
    expected = "" if torch.cuda.is_available() else "rng tracker,attention buffer,rope"
    assert failed == expected


def test_dist_fixture_is_a_gloo_world_of_one(dist):
    assert torch.distributed.get_backend() == "gloo"
    assert torch.distributed.get_world_size() == 1
    assert parallel_state.get_tensor_model_parallel_world_size() == 1
    assert parallel_state.get_pipeline_model_parallel_world_size() == 1
    config = tiny_config()
    assert config.use_cpu_initialization  # forced: megatron's only way to build CPU parameters
    assert not config.batch_p2p_comm  # forced: batched p2p over gloo mixes up directions at PP=2


# ----------------------------------------------------------------------------------------------------
# RNG
# ----------------------------------------------------------------------------------------------------

def test_rng_tracker_forks_the_cpu_generator(dist):
    tracker = get_cuda_rng_tracker()
    assert isinstance(tracker, cpu_compat.CpuRNGStatesTracker)
    assert {"model-parallel-rng", "data-parallel-rng", "expert-parallel-rng"} <= set(tracker.get_states())
    outside = torch.get_rng_state()
    with tracker.fork():
        first = torch.rand(4)
    assert torch.equal(torch.get_rng_state(), outside)  # the default stream is untouched
    with tracker.fork():
        second = torch.rand(4)
    assert not torch.equal(first, second)  # the tracked stream advanced
    assert not torch.equal(first, torch.rand(4))  # and differs from the default stream

    model_parallel_cuda_manual_seed(77)
    with get_cuda_rng_tracker().fork():
        again = torch.rand(4)
    model_parallel_cuda_manual_seed(77)
    with get_cuda_rng_tracker().fork():
        assert torch.equal(torch.rand(4), again)


def test_dropout_is_reproducible_from_the_seed(dist):
    model = tiny_gpt(tiny_config(hidden_dropout=0.2, attention_dropout=0.2))
    batch = make_batch(0)

    def loss_with_seed(seed):
        model_parallel_cuda_manual_seed(seed)
        return lm_loss(model, batch).item()

    assert loss_with_seed(5) == loss_with_seed(5)
    assert loss_with_seed(5) != loss_with_seed(6)
    model.eval()
    assert loss_with_seed(5) == loss_with_seed(6)


def test_activation_recompute_reproduces_dropout_and_gradients(dist):
    """Full recompute re-runs each layer in backward; it must replay the same CPU dropout masks."""
    dropout = dict(hidden_dropout=0.2, attention_dropout=0.2)
    plain = tiny_gpt(tiny_config(**dropout))
    recompute = tiny_gpt(tiny_config(**dropout, recompute_granularity="full", recompute_method="uniform",
                                     recompute_num_layers=1))
    load_full_weights(recompute, full_weights(plain))
    batch = make_batch(3)
    results = []
    for model in (plain, recompute):
        model_parallel_cuda_manual_seed(11)
        loss = lm_loss(model, batch)
        loss.backward()
        results.append((loss.item(), {n: p.grad for n, p in model.named_parameters()}))
    assert results[0][0] == pytest.approx(results[1][0], abs=1e-6)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, atol=1e-6, rtol=1e-5, msg=name)


# ----------------------------------------------------------------------------------------------------
# Model forward/backward
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("position_embedding_type", ["learned_absolute", "rope"])
@pytest.mark.parametrize("explicit_mask", [True, False], ids=["mask", "implicit-causal"])
def test_gpt_forward_backward_on_cpu(dist, position_embedding_type, explicit_mask):
    model = tiny_gpt(tiny_config(hidden_dropout=0.1, attention_dropout=0.1),
                     position_embedding_type=position_embedding_type)
    batch = make_batch(0)
    mask = batch["attention_mask"] if explicit_mask else None
    per_token = model(batch["tokens"], batch["position_ids"], mask, labels=batch["labels"])
    assert per_token.shape == (2, 16)
    loss = per_token.mean()
    assert torch.isfinite(loss) and abs(loss.item() - math.log(VOCAB)) < 0.5  # near-uniform at init
    loss.backward()
    params = dict(model.named_parameters())
    assert all(p.device.type == "cpu" for p in params.values())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params.values())
    assert params["decoder.layers.0.self_attention.linear_qkv.weight"].grad.abs().sum() > 0


def test_implicit_causal_mask_equals_explicit_mask(dist):
    model = tiny_gpt().eval()
    batch = make_batch(1)
    with torch.no_grad():
        explicit = model(batch["tokens"], batch["position_ids"], batch["attention_mask"], labels=batch["labels"])
        implicit = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
    torch.testing.assert_close(implicit, explicit)


# ----------------------------------------------------------------------------------------------------
# Gradient clipping
# ----------------------------------------------------------------------------------------------------

def test_grad_norm_and_clipping_on_cpu(dist):
    params = [torch.nn.Parameter(torch.zeros(5)), torch.nn.Parameter(torch.zeros(3, 2))]
    params[0].grad = torch.tensor([3.0, 0.0, 0.0, 0.0, 0.0])
    params[1].grad = torch.full((3, 2), 2.0)
    expected = math.sqrt(9 + 6 * 4)
    norm = get_grad_norm_fp32([p.grad for p in params])
    assert norm == pytest.approx(expected, rel=1e-6)
    assert get_grad_norm_fp32([p.grad for p in params], norm_type=math.inf) == pytest.approx(3.0)
    clip_grad_by_total_norm_fp32(params, max_norm=1.0, total_norm=norm)
    clipped = math.sqrt(sum((p.grad ** 2).sum().item() for p in params))
    assert clipped == pytest.approx(1.0, rel=1e-5)
