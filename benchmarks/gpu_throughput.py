#!/usr/bin/env python3
"""Training throughput and MFU of the text-to-code model against stock megatron-core, one process, one GPU.

One command times a full training step -- forward, backward, megatron DDP gradient reduction (with
``calculate_per_token_loss``, as :mod:`megatron_t2c.training.loop` does) and one ``get_megatron_optimizer`` Adam
step, through ``get_forward_backward_func`` -- for:

* **stock** megatron-core ``GPTModel`` on the local layer spec, tied embeddings over the padded vocabulary,
  megatron's loss over every position (masked afterwards), in these attention variants:

  - ``dense``: ``DotProductAttention`` with the batch's dense *document* mask -- the anchor of the goals;
  - ``sdpa-causal``: SDPA causal-only (no document reset: *not* a valid MRPT run, an upper bound);
  - ``flex``: FlexAttention with the document + prefix block mask (built once per batch).

* **ours**: :class:`~megatron_t2c.models.gpt.T2CGPTModel` for every preset x attention backend (``sdpa``,
  ``flex``) x separation (``none``, ``partial``, ``full``) x objective (``text-code``, ``code``,
  ``corrupt-code``, ``prefix-code``), on the batches of :func:`megatron_t2c.mrpt.objectives.build_batch`,
  through :func:`megatron_t2c.training.loop._forward_step` / ``_loss_func`` (the training step's own code).

Precision as in training: ``--precision bf16`` builds bf16 parameters wrapped in megatron's
``Float16Module``, DDP reduces gradients in fp32, the optimiser keeps fp32 master weights.  Rows are
synthetic packed PanGu documents (``[descr] docstring [python] code [eoc]``) over a synthetic 32k vocabulary
holding every Python grammar piece (see ``benchmarks/model_step.py``); the batch is built on the device once
per case, so the figures are the model step's (data loading is not timed).

**Timing.** Each case runs ``--warmup`` untimed steps, then ``--steps`` timed ones, back to back; on a GPU
every step is bracketed by CUDA events (no ``torch.cuda.synchronize`` inside or between the timed steps; one
after them to read the events), so host synchronisations inside the step (the loss path's selection sizes,
the optimiser's grad-norm) count as the idle time they cause.  The step time is the median; peak memory is
``torch.cuda.max_memory_allocated`` after resetting it at the start of the case (model, optimiser states and
activations).  Models are built one at a time (per preset x variant x separation), shared by the
objectives, and freed before the next.

**MFU** (:func:`megatron_t2c.training.metrics.flops_per_token`, the PaLM paper's Appendix B)::

    FLOPs/token = 6 * N + 12 * L * h * s        MFU = FLOPs/token * tokens/s / peak

``N`` = the weights of the matrix multiplications: per layer ``4 h^2`` (QKV + output projection) plus
``2 h f`` (the MLP, ``f = 4h``), and the tied output layer over the *padded base* vocabulary (``Vp x h``;
the code rows of a separation add no matmul work: each position is scored against ``Vp`` rows); ``L``
layers, ``h`` hidden, ``s`` the sequence length (attention scores and weighted sum, full square, causal
masking not subtracted); ``tokens/s`` counts every position of the batch, also those without loss.  Every
case of a preset therefore has the same FLOPs per token, so MFU ratios are throughput ratios.  Peak: 989
TFLOP/s (bf16 dense, H100 SXM/H200; ``--peak-tflops`` otherwise); on the CPU no MFU is shown.

**Loss agreement** (``--check-loss``, before the timing): on the same weights and batch, the per-token
losses of our model (every backend x separation x objective timed, forward only) are compared with the
stock ``dense`` model's (``DotProductAttention``, the objective's dense mask, loss masked after) *in fp32*.
The separated models get the stock table as their base rows and copies as their code rows, which leaves
their function unchanged.  The bf16 tolerance is calibrated by the stock path itself: our bf16 losses must
stay within ``max(2 x stock-bf16 deviation, 1e-2)`` of the fp32 reference (mean absolute per-token
difference, and the difference of the mean loss); in fp32 within ``1e-4``.

Goals (issue 8, printed as met / NOT met): ``pangu-350m`` ``full`` ``prefix-code`` >= 45 % MFU and >= 2.7x
the stock ``dense`` step; ``pangu-100m`` >= 35 % MFU; every objective x separation within 5 % of
``text-code``/``none`` of the same backend.

**2.6B** (``--presets pangu-2.6b``, PanGu-Coder's shape): tokens/s, MFU and peak memory on one card with
``--use-distributed-optimizer`` and ``--recompute-activations full`` (bf16 weights, fp32 gradients, fp32
master weights and Adam states: 16 bytes per parameter before activations).  The issue's H200 anchors
(stock dense / SDPA causal-only / FlexAttention, 100M and 350M) are printed beside this run's figures.

    python benchmarks/gpu_throughput.py --output gpu_throughput.json        # H100/H200, a few minutes
    python benchmarks/gpu_throughput.py --presets pangu-2.6b --stock dense --backends flex --separations full \
        --objectives prefix-code --use-distributed-optimizer --recompute-activations full --micro-batch-size 8 \
        --no-check-loss --output gpu_throughput_2p6b.json                  # one card, a minute
    python benchmarks/gpu_throughput.py --smoke                             # CPU, seconds (CI)
"""

from __future__ import annotations

import dataclasses
import fnmatch
import gc
import json
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Optional


import torch

from megatron_t2c.utils.dataclass_flags import option, parse_config

PRESETS = ("pangu-100m", "pangu-350m")
#: run only when named (``--presets pangu-2.6b``): one card needs activation recompute for it
LARGE_PRESETS = ("pangu-2.6b",)
OBJECTIVES = ("text-code", "code", "corrupt-code", "prefix-code")
SEPARATIONS = ("none", "partial", "full")
BACKENDS = ("sdpa", "flex")
STOCK_VARIANTS = ("dense", "sdpa-causal", "flex")
#: MFU goal per preset, and the speed-up over the stock dense step (issue 8).
MFU_GOALS = {"pangu-350m": 0.45, "pangu-100m": 0.35}
SPEEDUP_GOAL = ("pangu-350m", "full", "prefix-code", 2.7)
SPREAD_GOAL = 0.05
#: the issue's anchors (tokens/s), measured on an H200: torch 2.11, megatron-core 0.16.1 local spec, bf16,
#: seq 1024, micro-batch 16 -- printed beside this run's figures of the same cases
ANCHORS = {"card": "NVIDIA H200", "tokens_per_s": {
    "pangu-100m/stock/dense": 150e3, "pangu-350m/stock/dense": 60.5e3,
    "pangu-100m/stock/sdpa-causal": 343e3, "pangu-350m/stock/sdpa-causal": 165e3,
    "pangu-100m/stock/flex": 318e3, "pangu-350m/stock/flex": 147e3}}
#: loss-agreement floors (mean absolute per-token difference, and difference of the mean loss)
TOLERANCE_FLOOR = {"fp32": 1e-4, "bf16": 1e-2}
#: tiny overrides of ``--smoke`` (CPU, fp32, a few seconds)
SMOKE = dict(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=128, micro_batch_size=2,
             vocab_size=1024, steps=2, warmup=1, precision="fp32")


@dataclass(kw_only=True)
class BenchConfig:
    """Benchmark settings."""

    smoke: bool = option(False, help="CPU, fp32, 2 layers x hidden 64, 128 tokens, one preset: seconds (CI)")
    presets: list[str] = option(default_factory=lambda: list(PRESETS), help="model presets (pangu-2.6b only "
                                "when named: with --recompute-activations full and --use-distributed-optimizer)",
                                choices=PRESETS + LARGE_PRESETS)
    objectives: list[str] = option(default_factory=lambda: list(OBJECTIVES), help="objectives of our model",
                                   choices=OBJECTIVES)
    separations: list[str] = option(default_factory=lambda: list(SEPARATIONS), help="separations of our model",
                                    choices=SEPARATIONS)
    backends: list[str] = option(default_factory=lambda: list(BACKENDS), help="attention backends of our model",
                                 choices=BACKENDS + ("unfused",))
    stock: list[str] = option(default_factory=lambda: list(STOCK_VARIANTS), help="stock GPTModel variants "
                              "(dense: the anchor)", choices=STOCK_VARIANTS)
    cases: Optional[list[str]] = option(None, help="only the cases whose name matches one of these shell "
                                        "patterns (names: PRESET/stock/VARIANT, PRESET/BACKEND/SEPARATION/OBJECTIVE)")
    micro_batch_size: int = option(16, help="rows per step")
    seq_length: int = option(1024, help="tokens per row")
    vocab_size: int = option(32000, help="vocabulary (the project's default; a multiple of 128: no padding)")
    num_layers: Optional[int] = option(None, help="override the presets' layers")
    hidden_size: Optional[int] = option(None, help="override the presets' hidden size")
    num_attention_heads: Optional[int] = option(None, help="override the presets' heads")
    precision: str = option("bf16", help="parameters and compute", choices=("bf16", "fp32"))
    hidden_dropout: float = option(0.1, help="dropout after attention and MLP (all models)")
    attention_dropout: float = option(0.1, help="attention dropout (stock dense, sdpa; flex has none: 0)")
    recompute_activations: str = option("none", help="activation recompute of every model",
                                        choices=("none", "selective", "full"))
    use_distributed_optimizer: bool = option(False, help="megatron's distributed optimiser (its fp32 main "
                                             "weights and Adam states sharded over data-parallel ranks; one "
                                             "rank here)")
    compile: bool = option(False, help="torch.compile each TransformerLayer of our models (layer.compile())")
    chunked_head: bool = option(False, help="our models' LM head + cross-entropy fused and chunked "
                                "(ModelConfig.chunked_head: megatron_t2c.models.tied_output; TP=1): the lever's A/B")
    steps: int = option(10, help="timed steps per case (the median counts)")
    warmup: int = option(3, help="untimed steps first (compilation, allocator warm-up)")
    check_loss: bool = option(True, help="check our losses against the stock dense model first")
    peak_tflops: Optional[float] = option(None, help="peak TFLOP/s for MFU (default: 989 on H100/H200)")
    threads: int = option(0, help="torch CPU threads (0: torch's default)")
    cpu: bool = option(not torch.cuda.is_available(), help="run on the CPU (gloo)")
    output: Optional[str] = option(None, help="write the figures as JSON here")

    def apply_smoke(self) -> None:
        if not self.smoke:
            return
        for key, value in SMOKE.items():
            setattr(self, key, value)
        self.presets, self.cpu = self.presets[:1], True
        if self.threads == 0:
            self.threads = 1


# ---------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------

@dataclass
class Variant:
    """One model to build: stock (``backend`` = its variant) or ours (``backend`` = our attention backend)."""

    preset: str
    stock: bool
    backend: str
    separation: str = "none"

    @property
    def attention(self) -> str:
        """The attention kernel (``unfused`` = megatron's DotProductAttention)."""
        if self.stock:
            return {"dense": "unfused", "sdpa-causal": "sdpa", "flex": "flex"}[self.backend]
        return self.backend


def model_config(bench: BenchConfig, v: Variant):
    from megatron_t2c.models.config import ModelConfig

    overrides = {k: getattr(bench, k) for k in ("num_layers", "hidden_size", "num_attention_heads")
                 if getattr(bench, k) is not None}
    return ModelConfig(preset=v.preset, seq_length=bench.seq_length, attention_backend=v.attention,
                       separation=v.separation, hidden_dropout=bench.hidden_dropout,
                       attention_dropout=0.0 if v.attention == "flex" else bench.attention_dropout,
                       chunked_head=bench.chunked_head, **overrides)


def transformer_config(bench: BenchConfig, mc, precision: str, dropout: bool = True):
    recompute = {"none": {}, "selective": dict(recompute_granularity="selective"),
                 "full": dict(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1),
                 }[bench.recompute_activations]
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    extra = {} if dropout else dict(hidden_dropout=0.0, attention_dropout=0.0)
    return mc.transformer_config(bf16=precision == "bf16", params_dtype=dtype, pipeline_dtype=dtype,
                                 calculate_per_token_loss=True, **recompute, **extra)


def build_module(bench: BenchConfig, v: Variant, pieces, device, precision: str, dropout: bool = True):
    """The bare model of ``v`` (parameters in ``precision``) and its layout (None for stock)."""
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    from megatron_t2c.models.attention import layer_spec
    from megatron_t2c.models.gpt import build_model, make_layout
    from megatron_t2c.mrpt.separation import separated_token_ids

    mc = model_config(bench, v)
    tc = transformer_config(bench, mc, precision, dropout)
    if v.stock:
        from megatron_t2c.models.row_layout import padded_vocab_size

        spec = get_gpt_layer_local_spec() if v.attention == "unfused" else layer_spec(v.attention)
        module = GPTModel(config=tc, transformer_layer_spec=spec,
                          vocab_size=padded_vocab_size(bench.vocab_size, 1, mc.make_vocab_size_divisible_by),
                          max_sequence_length=bench.seq_length, share_embeddings_and_output_weights=True)
        layout = None
    else:
        layout = make_layout(mc, separated_token_ids(v.separation, pieces), bench.vocab_size)
        module = build_model(mc, layout, transformer_config=tc)
    return module.to(device), layout, mc, tc


def load_stock_weights(module, layout, state: dict) -> None:
    """Give ``module`` (ours, any separation) the function of the stock model whose ``state`` this is: the
    stock table becomes the base rows, copies of them the code rows."""
    state = dict(state)
    if layout is not None and layout.has_code_rows:
        key = "embedding.word_embeddings.weight"
        table = state[key]
        state[key] = layout.to_local(table, table[list(layout.separated)], 0)
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise RuntimeError(f"weights do not match: missing {missing}, unexpected {unexpected}")


def _half(module, tc):
    """``module`` wrapped as training wraps it in bf16 (megatron's ``Float16Module``)."""
    from megatron.core.transformer.module import Float16Module

    return Float16Module(tc, module) if tc.bf16 else module


def wrap_for_training(bench: BenchConfig, module, tc):
    """Float16Module (bf16) + megatron DDP + megatron Adam, wired into ``tc`` as training.setup does."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.transformer.module import Float16Module

    if bench.precision == "bf16":
        module = Float16Module(tc, module)
    model = DistributedDataParallel(tc, DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, use_distributed_optimizer=bench.use_distributed_optimizer), module=module)
    optimizer = get_megatron_optimizer(OptimizerConfig(
        optimizer="adam", lr=1e-4, weight_decay=0.01, clip_grad=1.0, bf16=bench.precision == "bf16",
        params_dtype=tc.params_dtype, use_distributed_optimizer=bench.use_distributed_optimizer), [model])
    tc.grad_scale_func = optimizer.scale_loss
    tc.no_sync_func = model.no_sync
    tc.finalize_model_grads_func = finalize_model_grads
    return model, optimizer


# ---------------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------------

def make_batch(bench: BenchConfig, tokens, labels, objective: str, layout, device) -> dict:
    """The training step's micro-batch (the keys of ``StepBatches``), on ``device``."""
    from megatron_t2c.mrpt.objectives import build_batch

    b = build_batch(tokens, labels, "pangu", objective, seed=0, sample_ids=torch.arange(len(tokens)),
                    vocab_size=bench.vocab_size)
    rows = b.input_ids if layout is None else layout.rows(b.input_ids, b.modality)
    out = dict(input_ids=rows, position_ids=b.position_ids, attention_mask=b.attention_mask, labels=b.labels,
               loss_mask=b.loss_mask, label_modality=b.label_modality)
    return {k: v.to(device) for k, v in out.items()}


def stock_batch(bench: BenchConfig, variant: str, tokens, labels, device) -> dict:
    """The stock model's batch: the document mask (dense), none (sdpa-causal), document + prefix (flex)."""
    batch = make_batch(bench, tokens, labels, "prefix-code" if variant == "flex" else "text-code", None, device)
    batch["loss_mask"] = torch.ones_like(batch["loss_mask"])  # megatron's loss over every position
    if variant == "sdpa-causal":
        batch["attention_mask"] = None
    return batch


def _stock_forward_step(flex: bool, data_iterator, model):
    """The stock model's micro-batch: loss on every position; flex builds its block mask once per batch
    (``flex`` False: the layers get megatron's tensor, as under activation recompute)."""
    from megatron_t2c.models.attention import AttentionMask
    from megatron_t2c.training.loop import _loss_func

    batch = next(data_iterator)
    mask = batch["attention_mask"]
    if flex:
        mask = AttentionMask.prepare(mask, "flex", batch=mask.shape[0], seq_length=mask.shape[-1],
                                     device=mask.device)
    losses = model(batch["input_ids"], batch["position_ids"], mask, labels=batch["labels"])
    return losses, partial(_loss_func, batch["loss_mask"])


# ---------------------------------------------------------------------------------------------------
# Loss agreement
# ---------------------------------------------------------------------------------------------------

@torch.no_grad()
def _losses(module, batch: dict, stock: bool) -> torch.Tensor:
    """Per-token losses (0 where no loss) in fp32."""
    if stock:
        losses = module(batch["input_ids"], batch["position_ids"], batch["attention_mask"], labels=batch["labels"])
    else:
        losses = module(batch["input_ids"], batch["position_ids"], batch["attention_mask"], labels=batch["labels"],
                        loss_mask=batch["loss_mask"], label_modality=batch["label_modality"])
    return losses.float() * batch["loss_mask"]


def _compare(ours: torch.Tensor, ref: torch.Tensor, loss_mask: torch.Tensor) -> dict:
    n = loss_mask.sum()
    return {"mean_abs": float((ours - ref).abs().sum() / n), "max_abs": float((ours - ref).abs().max()),
            "mean_loss": float(ours.sum() / n), "mean_loss_diff": float((ours.sum() - ref.sum()).abs() / n)}


def check_loss(bench: BenchConfig, preset: str, pieces, tokens, labels, device, backends) -> list[dict]:
    """Our per-token losses vs the stock dense model's in fp32 on the same weights (see the module notes)."""
    results = []
    ref_v = Variant(preset, True, "dense")
    ref, _, _, _ = build_module(bench, ref_v, pieces, device, "fp32", dropout=False)
    state = {k: v for k, v in ref.state_dict().items() if not k.endswith("_extra_state")}
    refs, yard = {}, {}
    for objective in bench.objectives:
        batch = make_batch(bench, tokens, labels, objective, None, device)
        refs[objective] = _losses(ref, batch, True)
    del ref
    if bench.precision == "bf16":  # the yardstick: how far the stock path itself moves in bf16
        stock16, _, _, tc = build_module(bench, ref_v, pieces, device, "bf16", dropout=False)
        load_stock_weights(stock16, None, state)
        stock16 = _half(stock16, tc)
        for objective in bench.objectives:
            batch = make_batch(bench, tokens, labels, objective, None, device)
            yard[objective] = _compare(_losses(stock16, batch, True), refs[objective], batch["loss_mask"])
        del stock16
    floor = TOLERANCE_FLOOR[bench.precision]
    for backend in backends:
        for separation in bench.separations:
            v = Variant(preset, False, backend, separation)
            module, layout, _, tc = build_module(bench, v, pieces, device, bench.precision, dropout=False)
            load_stock_weights(module, layout, state)
            module = _half(module, tc)
            module.eval()  # no dropout either way; eval also keeps FlexAttention forward-only on the CPU
            for objective in bench.objectives:
                batch = make_batch(bench, tokens, labels, objective, layout, device)
                got = _compare(_losses(module, batch, False), refs[objective], batch["loss_mask"])
                y = yard.get(objective, {"mean_abs": 0.0, "mean_loss_diff": 0.0})
                tol_abs, tol_mean = max(2 * y["mean_abs"], floor), max(2 * y["mean_loss_diff"], floor)
                ok = got["mean_abs"] <= tol_abs and got["mean_loss_diff"] <= tol_mean
                results.append({"case": f"{preset}/{backend}/{separation}/{objective}", "precision": bench.precision,
                                **got, "stock_bf16_mean_abs": y["mean_abs"] if yard else None,
                                "tolerance_mean_abs": tol_abs, "tolerance_mean_loss": tol_mean, "passed": ok})
            del module
            _free(device)
    return results


# ---------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------

class StepTimer:
    """Per-step times: CUDA events on a GPU (read once, after the last step), the wall clock on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list = []

    def start(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def stop(self, started) -> None:
        self.marks.append((started, self.start()))

    def seconds(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1000 for a, b in self.marks]
        return [b - a for a, b in self.marks]


def train_steps(bench: BenchConfig, model, optimizer, forward_step, batch: dict, device) -> dict:
    """``warmup`` + ``steps`` training steps on ``batch``: step times, peak memory, the last loss."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    forward_backward = get_forward_backward_func()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    timer, reduced = StepTimer(device), []
    for step in range(bench.warmup + bench.steps):
        started = timer.start()
        model.zero_grad_buffer()
        optimizer.zero_grad()
        out = forward_backward(forward_step_func=forward_step, data_iterator=iter([batch]), model=[model],
                               num_microbatches=1, seq_length=bench.seq_length,
                               micro_batch_size=bench.micro_batch_size, decoder_seq_length=bench.seq_length,
                               forward_only=False)
        optimizer.step()
        if step >= bench.warmup:
            timer.stop(started)
            reduced.append(out[0]["lm loss"])
    times = timer.seconds()
    total, tokens = torch.stack(reduced).sum(0).tolist()  # read after the timed steps
    return {"times": times, "loss": total / tokens if tokens else float("nan"),
            "loss_tokens": int(tokens) // len(times),
            "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else None}


def _free(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def plan(bench: BenchConfig, cpu: bool) -> tuple[list[tuple[Variant, list[str]]], list[str]]:
    """``(variant, case names)`` to run, after ``--cases``; and notes on what was left out."""
    notes, out = [], []

    def keep(name: str) -> bool:
        return not bench.cases or any(fnmatch.fnmatchcase(name, p) for p in bench.cases)

    for preset in bench.presets:
        for variant in bench.stock:
            if cpu and variant == "flex":
                notes.append(f"{preset}/stock/flex: not timed on the CPU (FlexAttention has no CPU backward)")
                continue
            name = f"{preset}/stock/{variant}"
            if keep(name):
                out.append((Variant(preset, True, variant), [name]))
        for backend in bench.backends:
            if cpu and backend == "flex":
                notes.append(f"{preset}/flex/*: not timed on the CPU (no backward there; its forward is checked)")
                continue
            for separation in bench.separations:
                names = [f"{preset}/{backend}/{separation}/{o}" for o in bench.objectives]
                names = [n for n in names if keep(n)]
                if names:
                    out.append((Variant(preset, False, backend, separation), names))
    return out, notes


def run_variant(bench: BenchConfig, v: Variant, names: list[str], pieces, tokens, labels, device, fpt: float,
                peak: Optional[float]) -> list[dict]:
    from megatron_t2c.training.loop import _forward_step

    module, layout, mc, tc = build_module(bench, v, pieces, device, bench.precision)
    if bench.compile and not v.stock:
        for layer in module.decoder.layers:
            layer.compile()
    params = sum(p.numel() for p in module.parameters())
    model, optimizer = wrap_for_training(bench, module, tc)
    rows = []
    for name in names:
        if v.stock:
            batch = stock_batch(bench, v.backend, tokens, labels, device)
            # under activation recompute the checkpoint function passes tensors only: the layers convert
            forward_step = partial(_stock_forward_step, v.backend == "flex" and bench.recompute_activations == "none")
        else:
            batch = make_batch(bench, tokens, labels, name.rsplit("/", 1)[1], layout, device)
            forward_step = _forward_step
        t0 = time.perf_counter()
        figures = train_steps(bench, model, optimizer, forward_step, batch, device)
        step = statistics.median(figures["times"])
        tokens_per_s = bench.micro_batch_size * bench.seq_length / step
        rows.append({
            "case": name, "preset": v.preset, "model": "stock GPTModel" if v.stock else "T2CGPTModel",
            "attention": v.attention, "variant": v.backend if v.stock else None, "separation": v.separation,
            "objective": "any" if v.stock else name.rsplit("/", 1)[1],
            "separated": layout.num_separated if layout is not None else 0, "parameters": params,
            "attention_dropout": tc.attention_dropout, "loss_positions": figures["loss_tokens"],
            "step_s": step, "best_s": min(figures["times"]), "times": figures["times"],
            "tokens_per_s": tokens_per_s, "tflops": fpt * tokens_per_s / 1e12,
            "mfu": fpt * tokens_per_s / (peak * 1e12) if peak else None, "peak_gib": figures["peak_gib"],
            "loss": figures["loss"], "case_wall_s": time.perf_counter() - t0})
        print(f"  {name:<40} {step * 1000:8.1f} ms  {tokens_per_s:9.0f} tok/s"
              + (f"  MFU {100 * rows[-1]['mfu']:5.1f}%" if peak else "")
              + (f"  {figures['peak_gib']:.1f} GiB" if figures["peak_gib"] is not None else ""), flush=True)
    del model, optimizer, module, tc
    _free(device)
    return rows


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------

def goals(rows: list[dict]) -> list[dict]:
    """The issue's goals, evaluated on the rows that exist (each with met / not met)."""
    out = []
    by = {r["case"]: r for r in rows}
    for preset in dict.fromkeys(r["preset"] for r in rows):
        ours = [r for r in rows if r["preset"] == preset and r["model"] == "T2CGPTModel"]
        anchor = by.get(f"{preset}/stock/dense")
        target = [r for r in ours if r["separation"] == "full" and r["objective"] == "prefix-code"]
        if target and target[0]["mfu"] is not None and preset in MFU_GOALS:
            best = max(target, key=lambda r: r["tokens_per_s"])
            out.append({"goal": f"{preset} full prefix-code MFU >= {MFU_GOALS[preset]:.0%}", "case": best["case"],
                        "value": best["mfu"], "met": best["mfu"] >= MFU_GOALS[preset]})
        if target and anchor and preset == SPEEDUP_GOAL[0]:
            best = max(target, key=lambda r: r["tokens_per_s"])
            speedup = best["tokens_per_s"] / anchor["tokens_per_s"]
            out.append({"goal": f"{preset} full prefix-code >= {SPEEDUP_GOAL[3]}x stock dense", "case": best["case"],
                        "value": speedup, "met": speedup >= SPEEDUP_GOAL[3]})
        for backend in dict.fromkeys(r["attention"] for r in ours):
            base = by.get(f"{preset}/{backend}/none/text-code")
            group = [r for r in ours if r["attention"] == backend]
            if base and len(group) > 1:
                worst = max(group, key=lambda r: abs(r["step_s"] / base["step_s"] - 1))
                spread = worst["step_s"] / base["step_s"] - 1
                out.append({"goal": f"{preset} {backend}: every objective x separation within {SPREAD_GOAL:.0%} of "
                                    "text-code/none", "case": worst["case"], "value": spread,
                            "met": abs(spread) <= SPREAD_GOAL})
    return out


def table(rows: list[dict]) -> str:
    anchors = {r["preset"]: r for r in rows if r["variant"] == "dense"}
    lines = ["| case | attention | K sep | loss pos | step ms | tokens/s | TFLOP/s | MFU | peak GiB | vs stock dense |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        anchor = anchors.get(r["preset"])
        ratio = f"{r['tokens_per_s'] / anchor['tokens_per_s']:.2f}x" if anchor else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        lines.append(f"| {r['case']} | {r['attention']} | {r['separated']} | {r['loss_positions']} | "
                     f"{r['step_s'] * 1000:.1f} | {r['tokens_per_s']:.0f} | {r['tflops']:.2f} | {mfu} | {peak} | "
                     f"{ratio} |")
    return "\n".join(lines)


def anchor_rows(rows: list[dict], device_name: str) -> list[dict]:
    """This run's tokens/s beside the issue's anchors for the same cases."""
    out = []
    for r in rows:
        anchor = ANCHORS["tokens_per_s"].get(r["case"])
        if anchor is not None:
            out.append({"case": r["case"], "tokens_per_s": r["tokens_per_s"], "anchor_tokens_per_s": anchor,
                        "anchor_card": ANCHORS["card"], "this_card": device_name,
                        "same_card": ANCHORS["card"] in device_name, "ratio": r["tokens_per_s"] / anchor})
    return out


def main(argv=None) -> dict:
    bench = parse_config(BenchConfig, argv=argv, description=__doc__.split("\n")[0], epilog="example:\n  python benchmarks/gpu_throughput.py --output gpu_throughput.json   # on an H100/H200\n  python benchmarks/gpu_throughput.py --smoke                        # CPU, seconds")
    bench.apply_smoke()
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if bench.threads:
        torch.set_num_threads(bench.threads)
    if bench.precision == "bf16" and bench.cpu and not bench.smoke:
        print("note: bf16 on the CPU runs, but its figures mean nothing for a GPU", flush=True)
    from model_step import packed_rows, synthetic_pieces  # a sibling script (benchmarks/ is sys.path[0])
    from megatron_t2c.runtime import distributed
    from megatron_t2c.training.metrics import default_peak_tflops, flops_per_token
    from megatron_t2c.models.row_layout import padded_vocab_size

    distributed.initialize_distributed(1, 1, cpu=bench.cpu, seed=1234)
    device = torch.device("cpu") if bench.cpu else torch.device("cuda", torch.cuda.current_device())
    device_name = "cpu" if bench.cpu else torch.cuda.get_device_name()
    peak = bench.peak_tflops or (None if bench.cpu else default_peak_tflops())
    pieces = synthetic_pieces(bench.vocab_size)
    tokens, labels = packed_rows(bench.micro_batch_size, bench.seq_length, bench.vocab_size)
    variants, notes = plan(bench, bench.cpu)
    print(f"device {device_name} | torch {torch.__version__} | {bench.precision} | micro-batch "
          f"{bench.micro_batch_size} x {bench.seq_length} | vocab {bench.vocab_size} | peak "
          f"{peak or '-'} TFLOP/s | {sum(len(n) for _, n in variants)} cases | compile {bench.compile} | "
          f"chunked head {bench.chunked_head} | recompute {bench.recompute_activations} | distributed optimizer "
          f"{bench.use_distributed_optimizer}", flush=True)
    for note in notes:
        print(f"  skipped {note}")
    rows, checks, errors = [], [], []
    result = {"config": dataclasses.asdict(bench), "device": device_name, "torch": torch.__version__,
              "peak_tflops": peak, "rows": rows, "skipped": notes, "loss_check": checks, "errors": errors}

    def attempt(what: str, fn):
        """Run one part; a failure (e.g. out of memory) is recorded and the benchmark goes on."""
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - one case must not cost the card's whole run
            errors.append({"case": what, "error": f"{type(exc).__name__}: {exc}"[:500]})
            print(f"  {what}: FAILED ({errors[-1]['error'][:200]})", flush=True)
            _free(device)
            return []
        finally:
            if bench.output:  # written as it goes: a run cut short keeps what it measured
                with open(bench.output, "w", encoding="utf-8") as fh:
                    json.dump(result, fh, indent=2)

    try:
        for preset in bench.presets:
            mc = model_config(bench, Variant(preset, True, "dense"))
            arch = mc.architecture()
            vp = padded_vocab_size(bench.vocab_size, 1, mc.make_vocab_size_divisible_by)
            fpt = flops_per_token(arch.num_layers, arch.hidden_size, mc.ffn_hidden_size or 4 * arch.hidden_size,
                                  vp, arch.seq_length)
            print(f"{preset}: {arch.num_layers} layers, hidden {arch.hidden_size}, {arch.num_attention_heads} heads, "
                  f"{fpt / 1e9:.3f} GFLOP/token", flush=True)
            if bench.check_loss:
                found = attempt(f"{preset}/loss-check", lambda: check_loss(
                    bench, preset, pieces, tokens, labels, device, [b for b in bench.backends if b in BACKENDS]))
                checks += found
                for c in found:
                    print(f"  loss check {c['case']:<36} mean |d| {c['mean_abs']:.2e} "
                          f"(tol {c['tolerance_mean_abs']:.1e})"
                          f"  d(mean) {c['mean_loss_diff']:.2e}  {'ok' if c['passed'] else 'FAILED'}", flush=True)
            for v, names in variants:
                if v.preset == preset:
                    rows += attempt(names[0].rsplit("/", 1)[0] if not v.stock else names[0],
                                    lambda: run_variant(bench, v, names, pieces, tokens, labels, device, fpt, peak))
    finally:
        distributed.destroy_distributed()
    result["goals"] = goal_rows = goals(rows)
    result["anchors"] = anchors = anchor_rows(rows, device_name)
    result["loss_check_passed"] = all(c["passed"] for c in checks) if checks else None
    print()
    print(f"{device_name}, {bench.precision}, micro-batch {bench.micro_batch_size} x {bench.seq_length}: median of "
          f"{bench.steps} steps after {bench.warmup} warm-up; MFU = (6N + 12Lhs) x tokens/s / {peak or '-'} TFLOP/s")
    print(table(rows))
    if checks:
        failed = [c["case"] for c in checks if not c["passed"]]
        print(f"\nloss agreement with the stock dense model ({bench.precision}): {len(checks) - len(failed)}/"
              f"{len(checks)} within tolerance" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    if anchors:
        print(f"\nthis run ({device_name}) beside the issue's anchors ({ANCHORS['card']}, bf16, micro-batch 16 x 1024)"
              + ("" if any(a["same_card"] for a in anchors) else ": another card or shape, not comparable"))
        for a in anchors:
            print(f"  {a['case']:<32} {a['tokens_per_s']:10.0f} tok/s   anchor {a['anchor_tokens_per_s']:9.0f} tok/s"
                  f"   {a['ratio']:.2f}x")
    for e in errors:
        print(f"error {e['case']}: {e['error']}")
    if goal_rows and bench.cpu:
        print("goals (the CPU's figures say nothing about a GPU's; shown to exercise the report):")
    for g in goal_rows:
        value = f"{100 * g['value']:.1f}%" if "MFU" in g["goal"] or "within" in g["goal"] else f"{g['value']:.2f}x"
        print(f"goal {g['goal']}: {value} ({g['case']}): {'met' if g['met'] else 'NOT met'}")
    if bench.output:
        with open(bench.output, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":  # guarded: megatron may start helper processes that re-import __main__
    outcome = main()
    sys.exit(1 if outcome["errors"] or outcome["loss_check_passed"] is False else 0)
