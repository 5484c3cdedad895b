#!/usr/bin/env python3
"""What the training loop of ``pretrain_t2c.py`` adds to the model's bare step, in one run.

* **loop**: :meth:`megatron_t2c.training.loop.Trainer.train` exactly as ``pretrain_t2c.py`` runs it -- batches read
  from the megatron ``GPTDataset`` and built per objective, the loss reduction, a JSONL record per step,
  TensorBoard scalars, a console line every ``--log-interval`` steps and a distributed checkpoint every
  ``--save-interval`` steps.  Its steady-state step time is the wall time between the records of step
  ``warmup`` and step ``warmup + steps`` divided by ``steps`` (the window holds ``steps / save_interval``
  checkpoints).
* **bare**: the same model, optimiser and schedule on the same batches, already built and in memory:
  megatron's forward/backward schedule, the optimiser step and the scheduler step, nothing else.  Measured
  before and after the loop (the mean is the anchor), so a drift of the machine shows.

Goal: loop / bare <= 1.05.  CPU by default (1 thread, a small model); on a GPU pass ``--no-cpu``.  Needs the
quickstart's data (``bash examples/quickstart.sh``) or ``--data-path``/``--tokenizer-model``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass


import torch

from megatron_t2c.utils.dataclass_flags import option, parse_config


@dataclass(kw_only=True)
class BenchConfig:
    """Training-loop overhead benchmark."""

    data_path: str = option("runs/quickstart/data/pangu_all", help="dataset prefix")
    tokenizer_model: str = option("runs/quickstart/data/tokenizer.model", help="its tokenizer")
    format: str = option("pangu", help="dataset format")
    num_layers: int = option(4, help="model layers")
    hidden_size: int = option(256, help="hidden size")
    num_attention_heads: int = option(8, help="attention heads")
    seq_length: int = option(256, help="tokens per row")
    micro_batch_size: int = option(4, help="rows per micro-batch")
    global_batch_size: int = option(8, help="rows per step")
    objective: str = option("code", help="training objective")
    separation: str = option("partial", help="separation")
    steps: int = option(100, help="timed steps of each kind")
    warmup: int = option(10, help="untimed steps first")
    save_interval: int = option(50, help="checkpoint every N steps in the loop")
    log_interval: int = option(10, help="console line every N steps in the loop")
    threads: int = option(1, help="torch CPU threads")
    cpu: bool = option(True, help="run on the CPU (gloo)")
    output: str | None = option(None, help="write the figures as JSON here")


def _bare(trainer, batches: list[list[dict]]) -> float:
    """Seconds per step of schedule + optimiser + scheduler over ``batches`` (one list per step)."""
    start = time.perf_counter()
    for micro in batches:
        trainer.model.zero_grad_buffer()
        trainer.optimizer.zero_grad()
        trainer._forward_backward(micro, forward_only=False)
        ok, _, _ = trainer.optimizer.step()
        if ok:
            trainer.scheduler.step(increment=1)
    return (time.perf_counter() - start) / len(batches)


def main(argv=None) -> int:
    bench = parse_config(BenchConfig, argv, description=__doc__.split("\n")[0], epilog="example:\n  bash examples/quickstart.sh   # makes runs/quickstart/data\n  python benchmarks/training_loop.py --output training_loop.json")
    if bench.threads:
        torch.set_num_threads(bench.threads)
    from megatron_t2c.training.config import parse_run_config
    from megatron_t2c.training.loop import setup

    work = tempfile.mkdtemp(prefix="t2c-loop-bench-")
    total = bench.warmup + bench.steps + 1
    args = ["--num-layers", str(bench.num_layers), "--hidden-size", str(bench.hidden_size),
            "--num-attention-heads", str(bench.num_attention_heads), "--seq-length", str(bench.seq_length),
            "--data-path", bench.data_path, "--tokenizer-model", bench.tokenizer_model, "--format", bench.format,
            "--objective", bench.objective, "--separation", bench.separation, "--train-iters", str(total),
            "--micro-batch-size", str(bench.micro_batch_size), "--global-batch-size", str(bench.global_batch_size),
            "--save", os.path.join(work, "ckpt"), "--save-interval", str(bench.save_interval),
            "--log-interval", str(bench.log_interval), "--log-jsonl", os.path.join(work, "log.jsonl"),
            "--tensorboard-dir", os.path.join(work, "tb"), "--data-cache-path", os.path.join(work, "cache"),
            "--hidden-dropout", "0", "--attention-dropout", "0"] + (["--cpu"] if bench.cpu else [])
    trainer = setup(parse_run_config(args), console=open(os.devnull, "w"))
    gbs = trainer.train_batches.global_batch_size
    batches = [trainer.train_batches.step(i * gbs) for i in range(bench.steps)]
    _bare(trainer, batches[: bench.warmup])
    bare_before = _bare(trainer, batches)

    trainer.train()  # the loop: warmup + steps + 1 steps, checkpoints every save_interval
    records = [json.loads(line) for line in open(os.path.join(work, "log.jsonl"))]
    records = [r for r in records if "loss" in r]
    first, last = records[bench.warmup - 1], records[bench.warmup - 1 + bench.steps]
    loop = (last["time"] - first["time"]) / bench.steps
    saves = sum(1 for r in records[bench.warmup:bench.warmup + bench.steps] if r["step"] % bench.save_interval == 0)

    bare_after = _bare(trainer, batches)
    bare = (bare_before + bare_after) / 2
    from megatron_t2c.runtime import distributed as parallel
    parallel.destroy_distributed()

    tokens = gbs * bench.seq_length
    result = {
        "device": "cpu" if bench.cpu else torch.cuda.get_device_name(),
        "model": f"{bench.num_layers} layers, hidden {bench.hidden_size}, seq {bench.seq_length}",
        "objective": bench.objective, "separation": bench.separation, "global_batch": gbs,
        "steps": bench.steps, "checkpoints_in_window": saves,
        "bare_s_per_step": {"before": round(bare_before, 4), "after": round(bare_after, 4), "mean": round(bare, 4)},
        "loop_s_per_step": round(loop, 4),
        "ratio": round(loop / bare, 4),
        "bare_tokens_per_s": round(tokens / bare), "loop_tokens_per_s": round(tokens / loop),
    }
    print("| step | s/step | tokens/s |\n|---|---:|---:|")
    print(f"| bare fwd/bwd/optimiser (anchor; before {bare_before:.4f}, after {bare_after:.4f}) | {bare:.4f} | "
          f"{tokens / bare:,.0f} |")
    print(f"| pretrain_t2c loop (data, logging, JSONL, TensorBoard, {saves} checkpoint(s) in {bench.steps} steps) | "
          f"{loop:.4f} | {tokens / loop:,.0f} |")
    print(f"\nloop / bare = {loop / bare:.3f} (goal <= 1.05)")
    if bench.output:
        with open(bench.output, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
