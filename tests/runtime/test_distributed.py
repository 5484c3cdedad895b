"""Tensor, pipeline and data parallelism of megatron-core on CPU ranks (gloo), under torchrun.

Every multi-rank test compares against a single-partition reference computed on the same weights and data:
a TP=1/PP=1 model is built on each rank, its full weights are copied (sharded) into the parallel model, and
losses, gradients or updated weights must agree.
"""

import pytest
import torch
import torch.distributed as tdist
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.models.gpt import GPTModel
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from helpers.megatron_gpt import (MICRO_BATCH, SEED, SEQ, VOCAB, _full_name, _shard, full_weights, lm_loss, load_full_weights, make_batch, reference,
                                  switch_parallel_sizes, tiny_config, tiny_gpt)
from helpers.torchrun import run_with_torchrun

from megatron_t2c.runtime import distributed as parallel


def _rank_one_fails():
    parallel.initialize_distributed(1, 1, cpu=True, seed=SEED)
    print(f"rank {tdist.get_rank()} of {tdist.get_world_size()} on {tdist.get_backend()}")
    if tdist.get_rank() == 1:
        raise RuntimeError("deliberate failure on rank 1")
    tdist.barrier()  # rank 0 waits for a rank that died: torchrun must tear it down


def test_torchrun_helper_fails_the_test_with_the_ranks_output():
    with pytest.raises(pytest.fail.Exception) as failure:
        run_with_torchrun(__file__, "_rank_one_fails", nproc=2, timeout=60)
    message = str(failure.value)
    assert "exited with" in message and "deliberate failure on rank 1" in message
    assert "rank 0 of 2 on gloo" in message and "rank 1 of 2 on gloo" in message


def test_initialize_destroy_and_reinitialize_in_one_process():
    draws = []
    for _ in range(2):
        parallel.initialize_distributed(1, 1, cpu=True, seed=3)
        assert tdist.is_initialized() and tdist.get_backend() == "gloo"
        assert parallel_state.model_parallel_is_initialized()
        draws.append(torch.rand(3))
        parallel.destroy_distributed()
        assert not tdist.is_initialized() and not parallel_state.model_parallel_is_initialized()
    parallel.destroy_distributed()  # a second tear-down is harmless
    assert torch.equal(draws[0], draws[1])  # the seed fully determines the default generator


# ----------------------------------------------------------------------------------------------------
# Tensor parallelism
# ----------------------------------------------------------------------------------------------------

def _tp2_matches_tp1():
    weights, ref_model = reference()
    batch = make_batch(0)
    ref_loss = lm_loss(ref_model, batch)
    ref_loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in ref_model.named_parameters()}

    switch_parallel_sizes(tp=2, pp=1)
    assert tdist.get_backend() == "gloo" and tdist.get_world_size() == 2
    model = tiny_gpt()
    load_full_weights(model, weights)
    loss = lm_loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert abs(loss.item() - ref_loss.item()) < 1e-5, (loss.item(), ref_loss.item())
    for name, param in model.named_parameters():  # every shard's gradient is the reference's slice
        torch.testing.assert_close(param.grad, _shard(param, ref_grads[name]), atol=1e-5, rtol=1e-4)
    split = [n for n, p in model.named_parameters() if getattr(p, "tensor_model_parallel", False)]
    assert "embedding.word_embeddings.weight" in split and any("linear_qkv" in n for n in split)


def test_tp2_loss_and_grads_equal_tp1():
    run_with_torchrun(__file__, "_tp2_matches_tp1", nproc=2)


# ----------------------------------------------------------------------------------------------------
# Pipeline parallelism
# ----------------------------------------------------------------------------------------------------

def _forward_step(data_iterator, model):
    """forward_step_func for megatron's schedules: the model output and a mean-token loss function."""
    batch = next(data_iterator)
    output = model(batch["tokens"], batch["position_ids"], batch["attention_mask"], labels=batch["labels"])

    def loss_func(output_tensor):
        loss = output_tensor.float().mean()
        return loss, {"lm loss": loss.detach().clone()}  # the schedule scales `loss` in place

    return output, loss_func


def _run_schedule(model, batches: list[dict[str, torch.Tensor]]) -> list[dict]:
    """One forward/backward over ``batches`` (one micro-batch each) with megatron's schedule."""
    return get_forward_backward_func()(
        forward_step_func=_forward_step, data_iterator=iter(batches), model=model,
        num_microbatches=len(batches), seq_length=SEQ, micro_batch_size=MICRO_BATCH, forward_only=False)


def _pp2_matches_pp1():
    batches = [make_batch(seed) for seed in range(4)]
    weights, ref_model = reference()
    ref_losses = [d["lm loss"].item() for d in _run_schedule(ref_model, batches)]
    ref_grads = {n: p.grad.clone() for n, p in ref_model.named_parameters()}

    switch_parallel_sizes(tp=1, pp=2)
    model = tiny_gpt()
    assert len(model.decoder.layers) == 1
    load_full_weights(model, weights)
    losses = _run_schedule(model, batches)
    if parallel_state.is_pipeline_last_stage():
        assert len(losses) == len(batches)
        for got, want in zip((d["lm loss"].item() for d in losses), ref_losses):
            assert abs(got - want) < 1e-5, (got, want)
    else:
        assert losses == []
    for name, param in model.named_parameters():  # layer grads flowed back through the pipeline
        if name.startswith("decoder.layers."):
            torch.testing.assert_close(param.grad, ref_grads[_full_name(model, name)], atol=1e-5, rtol=1e-4)


def test_pp2_schedule_loss_and_grads_equal_pp1():
    run_with_torchrun(__file__, "_pp2_matches_pp1", nproc=2)


def _interleaved_pp2_matches_pp1():
    """PP=2 with two virtual stages per rank (4 layers, one per model chunk): the interleaved schedule."""
    batches = [make_batch(seed) for seed in range(4)]
    weights, ref_model = reference(num_layers=4)
    ref_losses = [d["lm loss"].item() for d in _run_schedule(ref_model, batches)]

    switch_parallel_sizes(tp=1, pp=2, vp=2)
    config = tiny_config(num_layers=4, virtual_pipeline_model_parallel_size=2)
    chunks = [GPTModel(config=config, transformer_layer_spec=get_gpt_layer_local_spec(), vocab_size=VOCAB,
                       max_sequence_length=SEQ, share_embeddings_and_output_weights=True, vp_stage=vp,
                       pre_process=parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp),
                       post_process=parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp))
              for vp in range(2)]
    rank = parallel_state.get_pipeline_model_parallel_rank()
    assert [c.decoder.layers[0].layer_number for c in chunks] == [1 + rank, 3 + rank]
    for chunk in chunks:
        load_full_weights(chunk, weights)
    losses = get_forward_backward_func()(
        forward_step_func=_forward_step, data_iterator=[iter(batches), iter(batches)], model=chunks,
        num_microbatches=len(batches), seq_length=SEQ, micro_batch_size=MICRO_BATCH, forward_only=False)
    if parallel_state.is_pipeline_last_stage():
        assert len(losses) == len(batches)
        for got, want in zip((d["lm loss"].item() for d in losses), ref_losses):
            assert abs(got - want) < 1e-5, (got, want)  # later micro-batches overlap fwd and bwd p2p
    else:
        assert losses == []


def test_interleaved_pp2_schedule_loss_equals_pp1():
    run_with_torchrun(__file__, "_interleaved_pp2_matches_pp1", nproc=2)


# ----------------------------------------------------------------------------------------------------
# Distributed checkpointing
# ----------------------------------------------------------------------------------------------------

def _save(sharded_state_dict: dict, ckpt_dir: str, async_save: bool) -> None:
    """dist_checkpointing.save, either blocking or as an async request finalised through megatron's queue."""
    if not async_save:
        dist_checkpointing.save(sharded_state_dict, ckpt_dir)
        return
    request = dist_checkpointing.save(sharded_state_dict, ckpt_dir, async_sharded_save=True)
    queue = AsyncCallsQueue()
    queue.schedule_async_request(request)
    queue.maybe_finalize_async_calls(blocking=True)
    queue.close()


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_dist_checkpoint_round_trip_is_exact(dist, tmp_path, async_save):
    model = tiny_gpt()
    saved = full_weights(model)
    _save(model.sharded_state_dict(), str(tmp_path), async_save)
    torch.manual_seed(SEED + 1)
    fresh = tiny_gpt()
    assert any(not torch.equal(p, saved[n]) for n, p in fresh.named_parameters())
    fresh.load_state_dict(dist_checkpointing.load(fresh.sharded_state_dict(), str(tmp_path)))
    for name, param in fresh.named_parameters():
        assert torch.equal(param, saved[name]), name


def _tp2_checkpoint_loads_at_tp1(ckpt_dir: str):
    batch = make_batch(7)
    parallel.initialize_distributed(2, 1, cpu=True, seed=SEED)
    model = tiny_gpt()
    with torch.no_grad():
        tp2_loss = lm_loss(model, batch).item()
    dist_checkpointing.save(model.sharded_state_dict(), ckpt_dir)

    switch_parallel_sizes(tp=1, pp=1)  # two data-parallel replicas of the whole model
    torch.manual_seed(SEED + 1)
    model = tiny_gpt()
    with torch.no_grad():
        assert abs(lm_loss(model, batch).item() - tp2_loss) > 1e-4  # fresh weights really differ
    model.load_state_dict(dist_checkpointing.load(model.sharded_state_dict(), ckpt_dir))
    with torch.no_grad():
        tp1_loss = lm_loss(model, batch).item()
    assert abs(tp1_loss - tp2_loss) < 1e-5, (tp1_loss, tp2_loss)


def test_tp2_dist_checkpoint_loads_into_tp1(tmp_path):
    run_with_torchrun(__file__, "_tp2_checkpoint_loads_at_tp1", nproc=2, kwargs={"ckpt_dir": str(tmp_path)})


# ----------------------------------------------------------------------------------------------------
# Data parallelism: megatron DDP + optimizer with gradient clipping
# ----------------------------------------------------------------------------------------------------

LR, CLIP, EPS = 0.01, 0.05, 1e-4


def _expected_adam_step(weights: dict[str, torch.Tensor], batches: list[dict]) -> tuple[dict, float]:
    """Weights after one clipped Adam step on the mean loss over ``batches``, and the gradient norm.

    Adam's first step moves each weight by ``lr * g / (|g| + eps)`` (the bias corrections cancel); with
    ``eps`` near the size of the clipped gradients the result depends on the clipping factor.
    """
    model = tiny_gpt()
    load_full_weights(model, weights)
    (sum(lm_loss(model, b) for b in batches) / len(batches)).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values())).item()
    scale = min(1.0, CLIP / (norm + 1e-6))
    clipped = {n: g * scale for n, g in grads.items()}
    return {n: weights[n] - LR * clipped[n] / (clipped[n].abs() + EPS) for n in weights}, norm


def _ddp_step(use_distributed_optimizer: bool, weights: dict[str, torch.Tensor], batch: dict):
    """One megatron training step (DDP + get_megatron_optimizer); returns the model, grad norm, zeros."""
    config = tiny_config()
    model = DistributedDataParallel(
        config, DistributedDataParallelConfig(use_distributed_optimizer=use_distributed_optimizer),
        module=tiny_gpt(config))
    load_full_weights(model.module, weights)
    config.finalize_model_grads_func = finalize_model_grads
    config.no_sync_func = model.no_sync
    optimizer = get_megatron_optimizer(
        OptimizerConfig(optimizer="adam", lr=LR, adam_eps=EPS, weight_decay=0.0, clip_grad=CLIP,
                        log_num_zeros_in_grad=True, use_distributed_optimizer=use_distributed_optimizer),
        [model])
    model.zero_grad_buffer()
    optimizer.zero_grad()
    _run_schedule([model], [batch])
    ok, grad_norm, num_zeros = optimizer.step()
    assert ok
    return model.module, grad_norm, num_zeros


def _ddp_optimizer_step():
    weights, _ = reference()
    assert parallel_state.get_data_parallel_world_size() == 2
    batches = [make_batch(100 + rank) for rank in range(2)]
    expected, expected_norm = _expected_adam_step(weights, batches)
    assert expected_norm > CLIP  # the step really clips
    for use_distributed_optimizer in (False, True):
        model, grad_norm, num_zeros = _ddp_step(use_distributed_optimizer, weights, batches[tdist.get_rank()])
        assert abs(grad_norm - expected_norm) < 1e-4 * expected_norm, (grad_norm, expected_norm)
        assert num_zeros is not None and num_zeros >= 0
        for name, param in model.named_parameters():
            torch.testing.assert_close(param.detach(), expected[name], atol=1e-6, rtol=1e-5, msg=name)


def test_ddp_with_clipped_megatron_optimizer_with_and_without_distributed_optimizer():
    run_with_torchrun(__file__, "_ddp_optimizer_step", nproc=2)
