"""T2CGPTModel: presets, the modality-relative tied output layer, TP/PP equivalence, DDP, checkpoints.

The central check is the *enlarged-vocabulary equivalence*: the model's loss and gradients equal those of a
naive reference that appends the code rows to the vocabulary (``V + K`` rows) and, as the paper's release
does, masks the softmax -- at code positions to {code rows of separated tokens} and {base rows of the other
tokens}, elsewhere to the base rows -- with labels mapped to the enlarged ids.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as tdist
import torch.nn.functional as F
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.models.gpt import GPTModel
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.pipeline_parallel import get_forward_backward_func
from helpers.torchrun import run_with_torchrun

from megatron_t2c.runtime import distributed as parallel
from megatron_t2c.models.attention import layer_spec
from megatron_t2c.utils.dataclass_flags import parse_config
from megatron_t2c.mrpt.modality import CODE, DOCSTRING
from megatron_t2c.models.config import PRESETS, ModelConfig
from megatron_t2c.models.gpt import BASE_ROWS_ONLY, build_model, make_layout
from megatron_t2c.models.row_layout import RowLayout
from helpers.t2c_model_data import (GPT_NEO, MICRO_BATCH, MODES, SEED, SEQ, TABLE, TABLE_BASE, TABLE_CODE, VOCAB, assert_matches,
                            canonical, load_canonical, make_batch, mean_loss, model_config, model_inputs,
                            separated, tiny_model)

TOL = dict(atol=2e-5, rtol=1e-4)
# torch's distributed checkpointing, as megatron-core 0.16.1 calls it, warns about its own deprecations
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning:torch.distributed.checkpoint",
                                        "ignore::FutureWarning:megatron.core.dist_checkpointing")


# ----------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------

def test_presets_follow_the_paper_and_parse_from_the_command_line():
    assert {name: (p.num_layers, p.hidden_size, p.num_attention_heads, p.seq_length)
            for name, p in PRESETS.items()} == {"pangu-100m": (12, 768, 12, 1024),
                                                "pangu-350m": (24, 1024, 16, 1024),
                                                "pycodegpt-100m": (12, 768, 12, 1024),
                                                "pangu-2.6b": (32, 2560, 32, 1024)}
    config = parse_config(ModelConfig, argv=["--preset", "pangu-350m", "--num-layers", "4",
                                             "--position-embedding-type", "rope", "--attention-backend", "flex",
                                             "--attention-dropout", "0", "--separation", "partial"])
    arch = config.architecture()
    assert (arch.num_layers, arch.hidden_size, arch.num_attention_heads, arch.seq_length) == (4, 1024, 16, 1024)
    assert (config.position_embedding_type, config.attention_backend) == ("rope", "flex")
    assert config.separation == "partial"
    assert ModelConfig().architecture() == PRESETS["pangu-100m"]
    with pytest.raises(ValueError):
        ModelConfig(preset="gpt-9")
    with pytest.raises(ValueError, match="attention_dropout"):
        ModelConfig(attention_backend="flex")  # FlexAttention has no dropout: the default 0.1 is refused
    with pytest.raises(SystemExit):
        parse_config(ModelConfig, argv=["--attention-backend", "flash"])


def test_build_uses_megatron_parts_with_a_tied_layout_sized_table(dist):
    config = model_config(position_embedding_type="rope")
    tc = config.transformer_config()
    assert (tc.num_layers, tc.hidden_size, tc.num_attention_heads, tc.ffn_hidden_size) == (2, 32, 4, 128)
    layout = make_layout(config, separated("partial"), VOCAB)
    model = build_model(config, layout)
    assert isinstance(model, GPTModel) and model.share_embeddings_and_output_weights
    assert model.embedding.word_embeddings.weight.shape == (layout.table_size, 32)
    assert model.output_layer.weight is None  # tied: the output uses the embedding table
    assert not hasattr(model.embedding, "position_embeddings") and hasattr(model, "rotary_pos_emb")
    with pytest.raises(ValueError, match="TP=2"):
        build_model(config, make_layout(config, [], VOCAB, tp_size=2))


# ----------------------------------------------------------------------------------------------------
# The output layer
# ----------------------------------------------------------------------------------------------------

def test_code_rows_start_equal_to_their_base_rows(dist):
    model = tiny_model("full")
    layout, table = model.layout, model.embedding.word_embeddings.weight
    ids = list(layout.separated)
    assert torch.equal(table[layout.code_rows()], table[layout.base_rows()[ids]])
    assert not torch.equal(table[layout.base_rows()[ids[1:]]], table[layout.base_rows()[ids[:-1]]])


def _enlarged_reference(model, batch):
    """Per-token losses of the release's enlarged-vocabulary model on ``model``'s weights, and that model."""
    layout, K = model.layout, model.layout.num_separated
    sep_index = torch.full((VOCAB,), -1)
    sep_index[list(layout.separated)] = torch.arange(K)
    weights = canonical(model)
    ref = GPTModel(config=model.config, transformer_layer_spec=layer_spec("sdpa"), vocab_size=VOCAB + K,
                   max_sequence_length=SEQ, share_embeddings_and_output_weights=True)
    with torch.no_grad():
        for name, param in ref.named_parameters():
            param.copy_(torch.cat([weights[TABLE_BASE], weights[TABLE_CODE]]) if name == TABLE else weights[name])

    def enlarge(ids, is_code):  # a separated token in code -> its enlarged id V + index
        return torch.where(is_code & (sep_index[ids] >= 0), VOCAB + sep_index[ids], ids)

    inputs = enlarge(batch["input_ids"], batch["modality"] == CODE)
    logits = ref(inputs, batch["position_ids"], batch["attention_mask"])  # [b, s, V + K]
    at_code = batch["label_modality"] == CODE
    code_space = torch.cat([sep_index < 0, torch.ones(K, dtype=torch.bool)])
    base_space = torch.cat([torch.ones(VOCAB, dtype=torch.bool), torch.zeros(K, dtype=torch.bool)])
    allowed = torch.where(at_code[..., None], code_space, base_space)
    logits = logits.masked_fill(~allowed, float("-inf"))
    labels = enlarge(batch["labels"], at_code)
    losses = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
    return losses * batch["loss_mask"], ref


@pytest.mark.parametrize("objective", ["code", "text-code"])
@pytest.mark.parametrize("mode", MODES)
def test_loss_and_gradients_equal_the_enlarged_vocabulary_reference(dist, mode, objective):
    model = tiny_model(mode)
    with torch.no_grad():  # code rows that differ from their base rows
        model.embedding.word_embeddings.weight.add_(0.05 * torch.randn_like(model.embedding.word_embeddings.weight))
    batch = make_batch(21, objective)
    assert 0 < int((batch["label_modality"] == CODE).sum()) < batch["labels"].numel()
    losses = model(**model_inputs(batch, model.layout))
    ref_losses, ref = _enlarged_reference(model, batch)
    torch.testing.assert_close(losses, ref_losses, **TOL)
    assert bool((losses[batch["loss_mask"] == 0] == 0).all())
    count = batch["loss_mask"].sum()
    (losses.sum() / count).backward()
    (ref_losses.sum() / count).backward()
    ref_grads = {n: p.grad for n, p in ref.named_parameters() if n != TABLE}
    table_grad = ref.embedding.word_embeddings.weight.grad
    ref_grads.update({TABLE_BASE: table_grad[:VOCAB], TABLE_CODE: table_grad[VOCAB:]})
    assert_matches(model, {n: p.grad for n, p in model.named_parameters()}, ref_grads, padding_zero=True, **TOL)


def test_without_separation_the_model_is_megatrons_gpt(dist):
    """With no code rows and no vocabulary padding, losses and gradients are those of a stock GPTModel."""
    config = model_config()
    layout = RowLayout([], 320, 1, 64)  # 320 = padded: nothing to mask
    model = build_model(config, layout)
    stock = GPTModel(config=model.config, transformer_layer_spec=layer_spec("sdpa"), vocab_size=320,
                     max_sequence_length=SEQ, share_embeddings_and_output_weights=True)
    stock.load_state_dict(model.state_dict())
    batch = make_batch(4, "code")
    args = (batch["input_ids"], batch["position_ids"], batch["attention_mask"])
    want = stock(*args, labels=batch["labels"])
    torch.testing.assert_close(model(*args, labels=batch["labels"]), want, atol=0, rtol=0)  # no selection
    masked = model(*args, labels=batch["labels"], loss_mask=batch["loss_mask"])
    torch.testing.assert_close(masked, want * batch["loss_mask"], **TOL)
    masked.sum().backward()
    (want * batch["loss_mask"]).sum().backward()
    for (name, p), q in zip(model.named_parameters(), stock.parameters()):
        torch.testing.assert_close(p.grad, q.grad, **TOL, msg=name)


def test_positions_without_loss_never_reach_the_output_layer(dist, monkeypatch):
    model = tiny_model("partial")
    rows_seen = []
    original = model._to_tp_region
    monkeypatch.setattr(model, "_to_tp_region", lambda x: rows_seen.append(x.shape[0]) or original(x))
    batch = make_batch(8, "prefix-code")
    inputs = model_inputs(batch, model.layout)
    losses = model(**inputs)
    assert rows_seen == [int(batch["loss_mask"].sum())] and rows_seen[0] < batch["labels"].numel()
    other = dict(inputs, labels=torch.where(batch["loss_mask"] == 0, 0, batch["labels"]))
    assert torch.equal(model(**other), losses)  # labels without loss do not matter
    nothing = model(**dict(inputs, loss_mask=torch.zeros_like(batch["loss_mask"])))
    assert not nothing.any()
    nothing.sum().backward()  # still a graph through the output layer
    assert not model.embedding.word_embeddings.weight.grad.any()


def test_logits_score_each_position_in_its_output_space_and_padding_is_never_predicted(dist):
    model = _perturbed("full").eval()  # code rows that differ from their base rows
    layout = model.layout
    batch = make_batch(2, "code")
    inputs = dict(model_inputs(batch, layout), labels=None, loss_mask=None)
    with torch.no_grad():
        mixed = model(**inputs)
        code = model(**dict(inputs, label_modality=CODE))
        base = model(**dict(inputs, label_modality=None))
        gathered = model(**dict(inputs, runtime_gather_output=True))
    assert mixed.shape == (MICRO_BATCH, SEQ, layout.padded_vocab_size)  # TP=1: the shard is everything
    at_code = batch["label_modality"] == CODE
    assert torch.equal(mixed[at_code], code[at_code]) and torch.equal(mixed[~at_code], base[~at_code])
    assert not torch.equal(code[~at_code], base[~at_code])
    assert torch.equal(gathered, mixed)
    assert bool(torch.isinf(mixed[..., VOCAB:]).all()) and bool(torch.isfinite(mixed[..., :VOCAB]).all())
    assert int(mixed.argmax(-1).max()) < VOCAB
    assert (batch["label_modality"] == DOCSTRING).any()


def test_frozen_output_gives_the_same_logits_and_is_dropped_on_exit(dist):
    """Generation gathers the code-space output matrix once per block; nothing stale survives the block."""
    model = _perturbed("full").eval()
    inputs = dict(model_inputs(make_batch(2, "code"), model.layout), labels=None, loss_mask=None,
                  label_modality=CODE)
    with torch.no_grad():
        plain = model(**inputs)
        with model.frozen_output():
            assert model._frozen_code_weight is not None
            assert torch.equal(model(**inputs), plain)
        assert model._frozen_code_weight is None
        model.shared_embedding_or_output_weight().data[model.code_output_index] += 0.5
        assert not torch.equal(model(**inputs), plain)  # the weight changed: no stale copy is used


# ----------------------------------------------------------------------------------------------------
# Checkpoints (single rank)
# ----------------------------------------------------------------------------------------------------

def _perturbed(mode: str, config=None):
    """A tiny model whose table is perturbed, so that code rows differ from their base rows."""
    model = tiny_model(mode, config)
    with torch.no_grad():
        model.embedding.word_embeddings.weight.add_(0.1 * torch.randn_like(model.embedding.word_embeddings.weight))
    return model


def test_checkpoint_round_trip_and_separation_checks(dist, tmp_path):
    model = _perturbed("full")
    (tmp_path / "full").mkdir()
    dist_checkpointing.save(model.sharded_state_dict(), str(tmp_path / "full"))
    fresh = tiny_model("full")
    fresh.load_state_dict(dist_checkpointing.load(fresh.sharded_state_dict(), str(tmp_path / "full")))
    for (name, p), q in zip(model.named_parameters(), fresh.parameters()):
        used = p if name != TABLE else p[: model.layout.shard_size + model.layout.num_separated]
        assert torch.equal(used, q[: used.shape[0]]), name
    # same number of separated ids, other ids: refused
    ids = list(separated("full"))
    other = make_layout(model_config(), ids[1:] + [14], VOCAB)
    wrong = build_model(model_config(), other)
    with pytest.raises(RuntimeError, match="separates"):
        wrong.load_state_dict(dist_checkpointing.load(wrong.sharded_state_dict(), str(tmp_path / "full")))


def test_a_checkpoint_without_separation_initialises_code_rows_from_base_rows(dist, tmp_path):
    none = _perturbed("none")
    dist_checkpointing.save(none.sharded_state_dict(), str(tmp_path))
    batch = make_batch(9, "code")
    with torch.no_grad():
        want = mean_loss(none, batch)
    model = tiny_model("partial")
    state = model.sharded_state_dict(metadata={BASE_ROWS_ONLY: True})
    model.load_state_dict(dist_checkpointing.load(state, str(tmp_path)))
    layout, table = model.layout, model.embedding.word_embeddings.weight
    ids = list(layout.separated)
    assert torch.equal(table[layout.base_rows()[:VOCAB]], none.embedding.word_embeddings.weight[:VOCAB])
    assert torch.equal(table[layout.code_rows()], table[layout.base_rows()[ids]])
    with torch.no_grad():  # copies of base rows compute exactly what the shared model computed
        torch.testing.assert_close(mean_loss(model, batch), want, atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------------------------------
# Tensor parallelism (torchrun, 2 ranks)
# ----------------------------------------------------------------------------------------------------

def _switch(tp: int, pp: int) -> None:
    parallel.destroy_distributed(keep_process_group=True)
    parallel.initialize_distributed(tp, pp, cpu=True, seed=SEED)


def _references(batches, run, cases=None) -> dict:
    """Per case (default: per mode): canonical weights, the reference's output of ``run`` and its canonical
    gradients.  ``cases``: name -> (mode, ModelConfig)."""
    parallel.initialize_distributed(1, 1, cpu=True, seed=SEED)
    out = {}
    for name, (mode, config) in (cases or {mode: (mode, None) for mode in MODES}).items():
        model = _perturbed(mode, config)
        result = run(model, batches)
        out[name] = (canonical(model), result, canonical(model, {n: p.grad for n, p in model.named_parameters()}))
    return out


def _tp_run(model, batches):
    loss = mean_loss(model, batches[0])
    loss.backward()
    with torch.no_grad():
        inputs = dict(model_inputs(batches[0], model.layout), labels=None, loss_mask=None)
        logits = model(**inputs, runtime_gather_output=True)[..., :VOCAB]
    return loss.item(), logits


#: TP=2 cases: every separation, and GPT-Neo's layers (no qkv bias, unscaled scores, a local second layer)
_TP_CASES = {**{mode: (mode, None) for mode in MODES}, "gpt-neo": ("partial", model_config(**GPT_NEO))}


def _tp2_matches_tp1():
    batches = [make_batch(11, "code")]
    refs = _references(batches, _tp_run, _TP_CASES)
    _switch(2, 1)
    for mode, (separation, config) in _TP_CASES.items():
        weights, (ref_loss, ref_logits), ref_grads = refs[mode]
        model = tiny_model(separation, config)
        if config is not None:
            assert all(layer.self_attention.linear_qkv.bias is None for layer in model.decoder.layers)
        assert model.layout.tp_size == 2
        assert model.embedding.word_embeddings.weight.shape[0] == model.layout.rows_per_rank
        load_canonical(model, weights)
        loss, logits = _tp_run(model, batches)
        assert abs(loss - ref_loss) < 1e-5, (mode, loss, ref_loss)
        torch.testing.assert_close(logits, ref_logits, **TOL)
        assert_matches(model, {n: p.grad for n, p in model.named_parameters()}, ref_grads, padding_zero=True, **TOL)
        print(f"TP=2 {mode}: loss {loss:.6f} = TP=1 {ref_loss:.6f}")


def test_tp2_loss_gradients_and_logits_equal_tp1_for_every_separation_and_gpt_neo_layers():
    run_with_torchrun(__file__, "_tp2_matches_tp1", nproc=2, timeout=120)


# ----------------------------------------------------------------------------------------------------
# Pipeline parallelism with megatron DDP, the tied-embedding sync and the optimizer (torchrun, 2 ranks)
# ----------------------------------------------------------------------------------------------------

def _forward_step(data_iterator, model):
    batch = next(data_iterator)
    layout = (model.module if hasattr(model, "module") else model).layout
    output = model(**model_inputs(batch, layout))

    def loss_func(output_tensor):
        loss = (output_tensor * batch["loss_mask"]).sum() / batch["loss_mask"].sum()
        return loss, {"lm loss": loss.detach().clone()}

    return output, loss_func


def _schedule(model, batches):
    return get_forward_backward_func()(
        forward_step_func=_forward_step, data_iterator=iter(batches), model=model,
        num_microbatches=len(batches), seq_length=SEQ, micro_batch_size=MICRO_BATCH, forward_only=False)


def _pp_run(model, batches):
    return [d["lm loss"].item() for d in _schedule(model, batches)]


def _pp2_matches_pp1():
    batches = [make_batch(seed, objective) for seed, objective in enumerate(["code", "text-code", "prefix-code"])]
    refs = _references(batches, _pp_run)
    _switch(1, 2)
    first = parallel_state.is_pipeline_first_stage()
    for mode in MODES:
        weights, ref_losses, ref_grads = refs[mode]
        stage = tiny_model(mode)
        assert len(stage.decoder.layers) == 1 and stage.pre_process == first and stage.post_process != first
        load_canonical(stage, weights)
        config = stage.config
        model = DistributedDataParallel(config, DistributedDataParallelConfig(), module=stage)
        config.finalize_model_grads_func = finalize_model_grads  # all-reduces the tied table across stages
        config.no_sync_func = model.no_sync
        optimizer = get_megatron_optimizer(OptimizerConfig(optimizer="adam", lr=1e-2, weight_decay=0.0), [model])
        model.zero_grad_buffer()
        optimizer.zero_grad()
        losses = _pp_run([model], batches)
        if not first:
            for got, want in zip(losses, ref_losses, strict=True):
                assert abs(got - want) < 1e-5, (mode, got, want)
        grads = {n: p.main_grad for n, p in stage.named_parameters()}
        assert_matches(stage, grads, ref_grads, **TOL)  # the table's grad: input + output use, on both stages
        ok, _, _ = optimizer.step()
        assert ok
        table = stage.shared_embedding_or_output_weight().detach().clone()
        copies = [torch.empty_like(table) for _ in range(2)]
        tdist.all_gather(copies, table)
        assert torch.equal(copies[0], copies[1]) and not torch.equal(table, stage.layout.to_local(
            weights[TABLE_BASE], weights[TABLE_CODE], 0))  # updated, and the tied copies agree
        print(f"PP=2 {mode}: losses {losses} = PP=1 {ref_losses}")


def test_pp2_with_ddp_and_optimizer_equals_pp1_for_every_separation():
    run_with_torchrun(__file__, "_pp2_matches_pp1", nproc=2, timeout=120)


# ----------------------------------------------------------------------------------------------------
# A TP=2 checkpoint loads at TP=1 (torchrun, 2 ranks)
# ----------------------------------------------------------------------------------------------------

def _tp2_checkpoint_loads_at_tp1(ckpt_dir: str):
    batch = make_batch(7, "code")
    parallel.initialize_distributed(2, 1, cpu=True, seed=SEED)
    want = {}
    for mode in MODES:
        model = _perturbed(mode)
        with torch.no_grad():
            want[mode] = mean_loss(model, batch).item()
        os.makedirs(f"{ckpt_dir}/{mode}", exist_ok=True)
        dist_checkpointing.save(model.sharded_state_dict(), f"{ckpt_dir}/{mode}")
    _switch(1, 1)  # two data-parallel replicas of the whole model
    for mode in MODES:
        model = tiny_model(mode)
        model.load_state_dict(dist_checkpointing.load(model.sharded_state_dict(), f"{ckpt_dir}/{mode}"))
        with torch.no_grad():
            got = mean_loss(model, batch).item()
        assert abs(got - want[mode]) < 1e-5, (mode, got, want[mode])
        print(f"TP=2 -> TP=1 {mode}: loss {got:.6f} = {want[mode]:.6f}")
    model = tiny_model("full")  # MRPT from a MAPT checkpoint: code rows start as the saved shared rows
    state = model.sharded_state_dict(metadata={BASE_ROWS_ONLY: True})
    model.load_state_dict(dist_checkpointing.load(state, f"{ckpt_dir}/none"))
    with torch.no_grad():
        assert abs(mean_loss(model, batch).item() - want["none"]) < 1e-5
    _switch(1, 2)  # and into two pipeline stages: the last one loads its copy of the table
    stage = tiny_model("full")
    stage.load_state_dict(dist_checkpointing.load(stage.sharded_state_dict(), f"{ckpt_dir}/full"))
    losses = get_forward_backward_func()(
        forward_step_func=_forward_step, data_iterator=iter([batch]), model=[stage], num_microbatches=1,
        seq_length=SEQ, micro_batch_size=MICRO_BATCH, forward_only=True)
    if parallel_state.is_pipeline_last_stage():
        got = losses[0]["lm loss"].item()
        assert abs(got - want["full"]) < 1e-5, (got, want["full"])
        print(f"TP=2 -> PP=2 full: loss {got:.6f} = {want['full']:.6f}")


def test_tp2_checkpoint_with_separation_loads_at_tp1_and_pp2(tmp_path):
    run_with_torchrun(__file__, "_tp2_checkpoint_loads_at_tp1", nproc=2, timeout=120,
                      kwargs={"ckpt_dir": str(tmp_path)})
