#!/usr/bin/env python3
"""Training-step time of the text-to-code model against a stock megatron-core GPTModel, in one run.

Anchor: megatron-core's ``GPTModel`` on its stock local layer spec (``DotProductAttention``: dense scores,
unfused masked softmax), tied embeddings over the padded vocabulary, the dense document mask of the batch and
megatron's loss over every position (masked afterwards).  Measured: :class:`~megatron_t2c.models.gpt.T2CGPTModel`
of the same size on the same rows for every separation (none / partial / full) and objective (text-code, code,
corrupt-code, prefix-code; batches from :func:`megatron_t2c.mrpt.objectives.build_batch`, row ids from the layout).
A step is what training does: forward, backward, megatron DDP grad sync and one megatron Adam step.  Goal:
every ratio (ours / stock) at most 1.10.

All models are built first; then every case takes one step per round, in turn, so that each sees the same
machine state; each case's figure is its best step (noise only ever adds time), its median shown beside it.
On the CPU the clock is the process's CPU time with one thread (the default), which other processes sharing
the cores disturb least; wall time is shown too.  Rows are synthetic PanGu documents (``[descr] text [python]
code [eoc]``, lengths like the stdlib corpus); the vocabulary is synthetic too (specials, byte pieces, Python
grammar pieces, filler): the partial separation holds every Python grammar word in both forms (604 ids at
32k, an upper bound for a real tokenizer), the full one every ordinary id.  Runs on the
CPU (``--cpu``, the default when there is no GPU) or on one GPU.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
import warnings
from dataclasses import dataclass


import torch

from megatron_t2c.utils.dataclass_flags import option, parse_config

OBJECTIVES = ("text-code", "code", "corrupt-code", "prefix-code")
SEPARATIONS = ("none", "partial", "full")


@dataclass(kw_only=True)
class BenchConfig:
    """Benchmark settings."""

    preset: str = option("pangu-100m", help="model preset")
    micro_batch_size: int = option(2, help="rows per step")
    seq_length: int = option(256, help="tokens per row")
    vocab_size: int = option(32000, help="tokenizer vocabulary (the project's default)")
    steps: int = option(4, help="timed steps per configuration (the best is compared, the median shown)")
    warmup: int = option(1, help="untimed steps first")
    threads: int = option(1, help="torch CPU threads (0: torch's default); 1 keeps CPU time meaningful on a "
                          "shared machine")
    attention_backend: str = option("sdpa", help="our model's attention backend")
    cpu: bool = option(not torch.cuda.is_available(), help="run on the CPU (gloo)")
    output: str | None = option(None, help="write the figures as JSON here")


# ---------------------------------------------------------------------------------------------------
# Synthetic vocabulary and rows
# ---------------------------------------------------------------------------------------------------

def synthetic_pieces(vocab_size: int) -> list[str]:
    """Specials, the 256 byte pieces, Python grammar words (plain and with ``▁``), then filler."""
    from megatron_t2c.mrpt import special_tokens as st
    from megatron_t2c.mrpt.separation import grammar_words

    pieces = sorted(st.IDS, key=st.IDS.get) + [f"<0x{b:02X}>" for b in range(256)]
    words = sorted(grammar_words())
    pieces += [w for word in words for w in (word, "\u2581" + word)]
    pieces += [f"p{i}" for i in range(vocab_size - len(pieces))]
    return pieces[:vocab_size]


def packed_rows(batch: int, seq: int, vocab_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens, labels)``: PanGu documents (docstring 8-40, code 30-200 tokens) packed back to back."""
    from megatron_t2c.mrpt import special_tokens as st

    gen = torch.Generator().manual_seed(seed)
    need = batch * (seq + 1)
    stream: list[int] = []
    while len(stream) < need:
        n_doc, n_code = (int(torch.randint(lo, hi, (1,), generator=gen)) for lo, hi in ((8, 41), (30, 201)))
        doc = torch.randint(271, vocab_size, (n_doc,), generator=gen).tolist()
        code = torch.randint(15, vocab_size, (n_code,), generator=gen)
        newline = torch.rand(n_code, generator=gen) < 0.1
        code = torch.where(newline, st.NEW_LINE_ID, code).tolist()
        stream += [st.DESCR_ID, *doc, st.PYTHON_ID, *code, st.EOC_ID]
    rows = torch.tensor(stream[:need]).view(batch, seq + 1)
    return rows[:, :-1], rows[:, 1:]


# ---------------------------------------------------------------------------------------------------
# Models and steps
# ---------------------------------------------------------------------------------------------------

@dataclass
class Case:
    """One timed configuration: a model with its optimizer, and the batch and forward call of one objective."""

    separation: str
    objective: str
    separated: int
    model: object
    optimizer: object
    forward: object
    loss_mask: torch.Tensor
    wall: list = dataclasses.field(default_factory=list)
    cpu: list = dataclasses.field(default_factory=list)


def _ddp_and_optimizer(config, module):
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    model = DistributedDataParallel(config, DistributedDataParallelConfig(), module=module)
    optimizer = get_megatron_optimizer(OptimizerConfig(optimizer="adam", lr=1e-4, weight_decay=0.01,
                                                       clip_grad=1.0), [model])
    return model, optimizer


def _batch(bench: BenchConfig, tokens, labels, objective: str, device):
    from megatron_t2c.mrpt.objectives import build_batch

    b = build_batch(tokens, labels, "pangu", objective, seed=0, sample_ids=torch.arange(len(tokens)),
                    vocab_size=bench.vocab_size)
    return b._replace(**{k: v.to(device) for k, v in b._asdict().items()})


def stock_case(bench: BenchConfig, model_config, tokens, labels, device) -> Case:
    """megatron-core's GPTModel, stock local spec, dense document mask, loss on every position."""
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    from megatron_t2c.models.row_layout import padded_vocab_size

    tc = model_config.transformer_config()
    gpt = GPTModel(config=tc, transformer_layer_spec=get_gpt_layer_local_spec(),
                   vocab_size=padded_vocab_size(bench.vocab_size, 1, model_config.make_vocab_size_divisible_by),
                   max_sequence_length=model_config.architecture().seq_length,
                   share_embeddings_and_output_weights=True).to(device)
    model, optimizer = _ddp_and_optimizer(tc, gpt)
    b = _batch(bench, tokens, labels, "text-code", device)
    forward = lambda: model(b.input_ids, b.position_ids, b.attention_mask, labels=b.labels)  # noqa: E731
    return Case("stock", "any", 0, model, optimizer, forward, b.loss_mask)


def our_cases(bench: BenchConfig, model_config, separation: str, pieces, tokens, labels, device) -> list[Case]:
    """T2CGPTModel with ``separation``, one case per objective (sharing the model and optimizer)."""
    from megatron_t2c.models.gpt import build_model, make_layout
    from megatron_t2c.mrpt.separation import separated_token_ids

    layout = make_layout(model_config, separated_token_ids(separation, pieces), bench.vocab_size)
    t2c = build_model(dataclasses.replace(model_config, separation=separation), layout).to(device)
    model, optimizer = _ddp_and_optimizer(t2c.config, t2c)
    cases = []
    for objective in OBJECTIVES:
        b = _batch(bench, tokens, labels, objective, device)

        def forward(b=b):
            return model(layout.rows(b.input_ids, b.modality), b.position_ids, b.attention_mask, labels=b.labels,
                         loss_mask=b.loss_mask, label_modality=b.label_modality)

        cases.append(Case(separation, objective, layout.num_separated, model, optimizer, forward, b.loss_mask))
    return cases


def timed_step(case: Case, device: torch.device) -> tuple[float, float]:
    """One training step: (wall seconds, CPU seconds of this process)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    case.model.zero_grad_buffer()
    case.optimizer.zero_grad()
    losses = case.forward()
    loss = (losses * case.loss_mask).sum() / case.loss_mask.sum()
    loss.backward()
    case.model.finish_grad_sync()
    ok, _, _ = case.optimizer.step()
    assert ok and torch.isfinite(loss)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> dict:
    bench = parse_config(BenchConfig, argv=argv, description=__doc__.split("\n")[0], epilog="example:\n  python benchmarks/model_step.py --output model_step.json")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if bench.threads:
        torch.set_num_threads(bench.threads)
    from megatron_t2c.runtime import distributed
    from megatron_t2c.models.config import ModelConfig

    distributed.initialize_distributed(1, 1, cpu=bench.cpu, seed=1234)
    device = torch.device("cpu") if bench.cpu else torch.device("cuda", torch.cuda.current_device())
    model_config = ModelConfig(preset=bench.preset, attention_backend=bench.attention_backend,
                               attention_dropout=0.0 if bench.attention_backend == "flex" else 0.1)
    pieces = synthetic_pieces(bench.vocab_size)
    tokens, labels = packed_rows(bench.micro_batch_size, bench.seq_length, bench.vocab_size)
    arch = model_config.architecture()
    print(f"{bench.preset}: {arch.num_layers} layers, hidden {arch.hidden_size}, {arch.num_attention_heads} heads; "
          f"vocab {bench.vocab_size}; micro-batch {bench.micro_batch_size} x {bench.seq_length} tokens; "
          f"{torch.get_num_threads()} threads on {device}", flush=True)
    cases = [stock_case(bench, model_config, tokens, labels, device)]
    for separation in SEPARATIONS:
        cases += our_cases(bench, model_config, separation, pieces, tokens, labels, device)
    for round_ in range(bench.warmup + bench.steps):  # interleaved: every case sees the same machine state
        for case in cases:
            wall, cpu = timed_step(case, device)
            if round_ >= bench.warmup:
                case.wall.append(wall)
                case.cpu.append(cpu)
        print(f"  round {round_ + 1}/{bench.warmup + bench.steps} done", flush=True)

    stock = cases[0]
    clock = "cpu" if bench.cpu else "wall"  # CPU time: robust to other processes sharing the cores
    anchor = min(getattr(stock, clock))
    tokens_per_step = bench.micro_batch_size * bench.seq_length
    rows = []
    for case in cases:
        step = min(getattr(case, clock))
        rows.append({"model": "stock GPTModel" if case is stock else "T2CGPTModel", "separation": case.separation,
                     "objective": case.objective, "separated": case.separated,
                     "loss_positions": int(case.loss_mask.sum()), "step_s": step,
                     "median_s": statistics.median(getattr(case, clock)), "wall_s": min(case.wall),
                     "ratio": step / anchor, "wall": case.wall, "cpu": case.cpu})
    print()
    print(f"step = best of {bench.steps} {clock}-time steps per case (interleaved rounds; median beside it); "
          f"ratio = ours / stock")
    header = (f"{'model':<15} {'separation':<10} {'objective':<13} {'K sep':>6} {'loss pos':>8} "
              f"{'step s':>7} {'median':>7} {'wall s':>7} {'tok/s':>7} {'ratio':>6}")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['model']:<15} {row['separation']:<10} {row['objective']:<13} {row['separated']:>6} "
              f"{row['loss_positions']:>8} {row['step_s']:>7.3f} {row['median_s']:>7.3f} {row['wall_s']:>7.3f} "
              f"{tokens_per_step / row['step_s']:>7.0f} {row['ratio']:>6.2f}")
    worst = max(r["ratio"] for r in rows[1:])
    print(f"worst ratio {worst:.2f} (goal <= 1.10): {'met' if worst <= 1.10 else 'NOT met'}")
    result = {"config": dataclasses.asdict(bench), "clock": clock, "rows": rows}
    if bench.output:
        with open(bench.output, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    distributed.destroy_distributed()
    return result


if __name__ == "__main__":  # guarded: megatron may start helper processes that re-import __main__
    main()
