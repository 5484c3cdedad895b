"""Training metrics: the FLOP and MFU estimate, and where each step's figures go (console, JSONL, TensorBoard).

**FLOPs per token** (forward + backward, the formula of the PaLM paper, Appendix B)::

    6 * N  +  12 * L * h * s

``N`` the parameters that do matrix multiplications (every weight except the position table; the tied word
embedding counts once, as the output layer), ``L`` layers, ``h`` hidden size, ``s`` the sequence length
(the attention scores and the weighted sum: 2 matmuls of ``s x h`` per token per layer, times 3 for the
backward).  Causal masking is not subtracted (kernels compute the full square or near it).  MFU is the
achieved FLOP/s over the device's peak: 989 TFLOP/s bf16 dense for an H100/H200; on a CPU no peak is
assumed (pass ``--peak-tflops``).

:class:`StepLog` writes one JSON object per optimiser step to ``--log-jsonl`` as soon as the step ends
(flushed and fsynced, so a killed run keeps every finished step), a console line every ``--log-interval``
steps and TensorBoard scalars.  On resume, the JSONL file is cut back to the resumed iteration first, so it
always describes one consistent run.
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Optional

import torch

from megatron_t2c.utils.jsonl import read_jsonl
from megatron_t2c.utils.atomic import atomic_open

__all__ = ["matmul_parameters", "flops_per_token", "default_peak_tflops", "StepLog"]


def matmul_parameters(num_layers: int, hidden: int, ffn_hidden: int, vocab_rows: int) -> int:
    """Weights of the matrix multiplications: per layer QKV + output projection + the MLP, and the
    (tied) output layer over ``vocab_rows``."""
    per_layer = 4 * hidden * hidden + 2 * hidden * ffn_hidden
    return num_layers * per_layer + vocab_rows * hidden


def flops_per_token(num_layers: int, hidden: int, ffn_hidden: int, vocab_rows: int, seq_length: int) -> float:
    """Training FLOPs per token (forward + backward): ``6 N + 12 L h s``."""
    return 6.0 * matmul_parameters(num_layers, hidden, ffn_hidden, vocab_rows) + 12.0 * num_layers * hidden * seq_length


def default_peak_tflops() -> Optional[float]:
    """989 (bf16 dense) on an H100/H200, else None."""
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        if "H100" in name or "H200" in name:
            return 989.0
    return None


def truncate_jsonl(path: str, last_step: int) -> None:
    """Keep only the records with ``step <= last_step`` (and drop a torn last line), atomically."""
    if not os.path.exists(path):
        return
    contents = read_jsonl(path, strict=False, quiet=True)  # a line cut by a kill is dropped
    for lineno, reason in contents.bad:
        print(f"{path}:{lineno}: dropped ({reason})", file=sys.stderr)
    kept = [json.dumps(record) for _, record in contents.records if record.get("step", 0) <= last_step]
    with atomic_open(path) as fh:
        fh.write("".join(k + "\n" for k in kept))


class StepLog:
    """Writes each step's figures (only on the rank that has the loss: the last rank)."""

    def __init__(self, *, active: bool, jsonl: Optional[str], tensorboard_dir: Optional[str], log_interval: int,
                 objective: str, resumed_step: int = 0, console: Optional[IO[str]] = None):
        self.active, self.log_interval, self.objective = active, max(1, log_interval), objective
        self.console = console or sys.stdout
        self.jsonl = self.writer = None
        if not active:
            return
        if jsonl:
            os.makedirs(os.path.dirname(os.path.abspath(jsonl)), exist_ok=True)
            truncate_jsonl(jsonl, resumed_step)
            self.jsonl = open(jsonl, "a", encoding="utf-8")
        if tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=tensorboard_dir, purge_step=resumed_step + 1)

    def step(self, record: dict) -> None:
        """Record one finished optimiser step (``record`` has at least step, loss, lr, grad_norm, tokens_per_s)."""
        if not self.active:
            return
        step = record["step"]
        if self.jsonl:
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()
            os.fsync(self.jsonl.fileno())
        if self.writer:
            w = self.writer
            w.add_scalar("train/loss", record["loss"], step)
            w.add_scalar(f"train/loss_{self.objective}", record["loss"], step)
            for key in ("lr", "grad_norm", "loss_scale", "tokens_per_s", "tflops_per_device", "mfu",
                        "memory_gib", "step_time_s"):
                if record.get(key) is not None:
                    w.add_scalar(f"train/{key}", record[key], step)
        if step % self.log_interval == 0 or record.get("last"):
            self.console.write(self._line(record) + "\n")
            self.console.flush()

    def validation(self, step: int, loss: float, tokens: int) -> None:
        if not self.active:
            return
        if self.jsonl:
            self.jsonl.write(json.dumps({"step": step, "valid_loss": loss, "valid_tokens": tokens}) + "\n")
            self.jsonl.flush()
        if self.writer:
            self.writer.add_scalar("valid/loss", loss, step)
            self.writer.add_scalar(f"valid/loss_{self.objective}", loss, step)
        self.console.write(f"validation | step {step} | loss {loss:.4f} | {tokens} tokens\n")
        self.console.flush()

    def _line(self, r: dict) -> str:
        parts = [f"step {r['step']}/{r['train_iters']}", f"loss {r['loss']:.4f}", f"lr {r['lr']:.3e}",
                 f"grad norm {r['grad_norm']:.3f}" if r.get("grad_norm") is not None else "grad norm -",
                 f"{r['tokens_per_s']:.0f} tok/s", f"{r['step_time_s'] * 1000:.0f} ms/step"]
        if r.get("loss_scale") is not None and r.get("precision") == "fp16":
            parts.append(f"loss scale {r['loss_scale']:.0f}")
        if r.get("tflops_per_device") is not None:
            parts.append(f"{r['tflops_per_device']:.1f} TFLOP/s/device")
        if r.get("mfu") is not None:
            parts.append(f"MFU {100 * r['mfu']:.1f}%")
        if r.get("memory_gib") is not None:
            parts.append(f"mem {r['memory_gib']:.2f} GiB")
        if r.get("skipped"):
            parts.append("skipped (overflow)")
        return " | ".join(parts)

    def close(self) -> None:
        if self.jsonl:
            self.jsonl.close()
        if self.writer:
            self.writer.flush()
            self.writer.close()
