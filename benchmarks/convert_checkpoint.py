#!/usr/bin/env python3
"""Conversion time and peak memory: a 350M-preset checkpoint (random weights) saved at TP=2 -> Hugging Face -> back.

Steps (each its own process, so that each peak RSS is that step's alone):

1. ``torchrun --nproc-per-node 2`` (CPU, gloo) builds the ``pangu-350m`` model at TP=2 with random weights and
   saves it with :func:`megatron_t2c.training.checkpointing.save_checkpoint` (vocabulary 32,000: a synthetic
   SentencePiece model with megatron_t2c's special ids, so no corpus is needed);
2. ``--to-hf`` (:func:`megatron_t2c.hf.export.export_to_hf`) in a fresh process: wall time and the process's
   peak RSS (``ru_maxrss``), also net of the RSS after imports;
3. ``--from-hf`` of that directory back to a checkpoint, likewise.

Goal: peak RSS of the export at most 2x the model's fp32 size (it streams one megatron tensor at a time).
``--smoke`` runs a 2-layer model instead (seconds).  ``--output FILE.json`` writes the figures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from megatron_t2c.utils.dataclass_flags import option, parse_config


@dataclasses.dataclass
class BenchConfig:
    """Conversion benchmark."""

    preset: str = option("pangu-350m", "model preset")
    vocab_size: int = option(32000, "vocabulary size")
    tensor_model_parallel_size: int = option(2, "TP size (= ranks) the checkpoint is saved with")
    smoke: bool = option(False, "a 2-layer, 64-wide model and a 1,024 vocabulary: checks the benchmark runs")
    workdir: Optional[str] = option(None, "where to write the checkpoint and the export (default: a temporary "
                                    "directory, removed afterwards)")
    output: Optional[str] = option(None, "write the figures as JSON here")


def synthetic_tokenizer(path: str, vocab_size: int) -> None:
    """A SentencePiece BPE model with megatron_t2c's special pieces, byte fallback and filler pieces."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    from megatron_t2c.mrpt import special_tokens as st

    proto = pb.ModelProto()
    control = {st.PAD: 3, st.UNK: 2, st.BOS: 3, st.EOS: 3}
    for piece in sorted(st.IDS, key=st.IDS.get):
        proto.pieces.add(piece=piece, score=0.0, type=control.get(piece, 4))
    for b in range(256):
        proto.pieces.add(piece=f"<0x{b:02X}>", score=0.0, type=6)
    for i in range(vocab_size - len(proto.pieces)):
        proto.pieces.add(piece=f"\u2581w{i}", score=-float(i), type=1)
    proto.trainer_spec.model_type = 2
    proto.trainer_spec.vocab_size = vocab_size
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.unk_id, proto.trainer_spec.bos_id = st.UNK_ID, st.BOS_ID
    proto.trainer_spec.eos_id, proto.trainer_spec.pad_id = st.EOS_ID, st.PAD_ID
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    with open(path, "wb") as fh:
        fh.write(proto.SerializeToString())


def _model_overrides(config: BenchConfig) -> dict:
    if config.smoke:
        return dict(preset="pangu-100m", num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=128)
    return dict(preset=config.preset)


# ---------------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------------

def _save_rank(workdir: str, overrides: dict, vocab_size: int) -> None:
    """torchrun body: build the model at TP = world size with random weights and save it."""
    import torch

    from megatron_t2c.runtime import distributed
    from megatron_t2c.training.checkpointing import make_run_info, save_checkpoint
    from megatron_t2c.models.config import ModelConfig
    from megatron_t2c.models.gpt import build_model, make_layout

    world = int(os.environ.get("WORLD_SIZE", "1"))
    distributed.initialize_distributed(world, 1, cpu=True, seed=0)
    config = ModelConfig(**overrides, hidden_dropout=0.0, attention_dropout=0.0)
    model = build_model(config, make_layout(config, [], vocab_size))
    tokenizer = os.path.join(workdir, "tokenizer.model")
    info = make_run_info(model_config=config, vocab_size=vocab_size, separation="none", separated=[],
                         tokenizer_model=tokenizer, fmt="pangu", objective="text-code", stage="mapt")
    with torch.no_grad():
        save_checkpoint(os.path.join(workdir, "ckpt"), 1, [model], None, None, progress={}, run_info=info,
                        tokenizer_model=tokenizer)
    distributed.destroy_distributed()


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _convert(direction: str, source: str, target: str) -> None:
    """Child: one conversion; prints JSON with seconds, peak RSS and the RSS after imports."""
    import torch  # noqa: F401 - imports first, so that the baseline holds them

    from megatron_t2c.hf.export import export_to_hf
    from megatron_t2c.hf.import_hf import import_from_hf

    if direction == "from-hf":
        import megatron.core  # noqa: F401
        import transformers  # noqa: F401

    baseline = _rss_mib()
    start = time.perf_counter()
    if direction == "to-hf":
        export_to_hf(source, target)
    else:
        import_from_hf(source, target)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": round(seconds, 2), "peak_rss_mib": round(peak, 1),
                      "rss_after_imports_mib": round(baseline, 1)}))


# ---------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(cmd: list[str], **kwargs) -> str:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONUNBUFFERED="1")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, **kwargs)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    return done.stdout


def main(argv: Optional[list[str]] = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] in ("--child-save", "--child-convert"):
        if sys.argv[1] == "--child-save":
            _save_rank(sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]))
        else:
            _convert(*sys.argv[2:5])
        return 0
    config = parse_config(BenchConfig, argv, description=__doc__.split("\n\n")[0], epilog="example:\n  python benchmarks/convert_checkpoint.py --output convert.json      # pangu-350m, TP=2 (a few minutes)\n  python benchmarks/convert_checkpoint.py --smoke")
    vocab = 1024 if config.smoke else config.vocab_size
    overrides = _model_overrides(config)
    workdir = config.workdir or tempfile.mkdtemp(prefix="t2c-convert-bench-")
    os.makedirs(workdir, exist_ok=True)
    try:
        synthetic_tokenizer(os.path.join(workdir, "tokenizer.model"), vocab)
        start = time.perf_counter()
        _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
              str(config.tensor_model_parallel_size), "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
              os.path.abspath(__file__), "--child-save", workdir, json.dumps(overrides), str(vocab)])
        save_seconds = time.perf_counter() - start
        from megatron_t2c.training.checkpointing import read_run_info

        info = read_run_info(os.path.join(workdir, "ckpt"))
        arch = info["architecture"]
        h, L, f, s = arch["hidden_size"], arch["num_layers"], arch["ffn_hidden_size"], arch["seq_length"]
        params = vocab * h + s * h + L * (4 * h * h + 4 * h + 2 * h * f + f + h + 4 * h) + 2 * h
        fp32_mib = params * 4 / 2**20
        figures = {"preset": "smoke" if config.smoke else config.preset, "parameters": params,
                   "fp32_size_mib": round(fp32_mib, 1), "saved_at_tp": config.tensor_model_parallel_size,
                   "save_seconds": round(save_seconds, 1)}
        for direction, source, target in (("to-hf", "ckpt", "hf"), ("from-hf", "hf", "ckpt-back")):
            out = _run([sys.executable, os.path.abspath(__file__), "--child-convert", direction,
                        os.path.join(workdir, source), os.path.join(workdir, target)])
            result = json.loads(out.strip().splitlines()[-1])
            result["peak_over_fp32"] = round(result["peak_rss_mib"] / fp32_mib, 2)
            result["net_peak_over_fp32"] = round((result["peak_rss_mib"] - result["rss_after_imports_mib"])
                                                 / fp32_mib, 2)
            figures[direction] = result
        figures["goal_export_peak_le_2x_fp32"] = figures["to-hf"]["peak_over_fp32"] <= 2.0
        print(json.dumps(figures, indent=2))
        if config.output:
            with open(config.output, "w", encoding="utf-8") as fh:
                json.dump(figures, fh, indent=2)
    finally:
        if config.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":  # guarded: dist_checkpointing starts helper processes that re-import __main__
    sys.exit(main())
