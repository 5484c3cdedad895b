"""The main job after the data stages: MAPT -> MRPT variants -> zero-shot evaluation -> HF export -> report.

``examples/quickstart.sh`` runs the data stages (extraction, tokenizer, datasets, summary) and then this
module (``t2c pipeline``, or ``tools/run_pipeline.py``).  Everything lands under one run directory::

    RUN_DIR/train/<name>/          checkpoints/, log.jsonl, tensorboard/   (name: mapt, mrpt_<objective>_<separation>)
    RUN_DIR/eval/<name>/<task>/    <mode>.samples.jsonl, <mode>.results.jsonl, <mode>.summary.json
                                   (task: humaneval, mbpp; mode: greedy, sampled, incremental)
    RUN_DIR/hf/<name>/             Hugging Face export (+ verify.json)
    RUN_DIR/report.md, *.png       the report (megatron_t2c.analysis.report)
    RUN_DIR/timings.json           seconds per stage

A stage that finished (its ``.done`` marker, or its output) is skipped on a re-run; an interrupted training or
evaluation stage resumes where it stopped (``--load``; samples and results files are resumed).  With
``--nproc-per-node N`` > 1 the training and generation stages run under torchrun (N GPUs, or N CPU ranks);
otherwise everything runs in this process, which saves the start-up of a process per stage.

The defaults are tiny (a 2-layer, 96-wide model with a 512-token context, so that every HumanEval prompt
fits; a few hundred steps; small evaluation samples) so that the whole job fits in about 20 minutes on 2 CPU
cores; the flags scale it up without editing scripts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from megatron_t2c.utils.atomic import write_json
from megatron_t2c.utils.dataclass_flags import option


#: The MRPT runs of the main job: the code objective with every separation, then each other objective.
DEFAULT_RUNS = ("code:none", "code:partial", "code:full", "text-code:partial", "corrupt-code:partial",
                "prefix-code:partial")


@dataclass(kw_only=True)
class PipelineConfig:
    """The main job after the data stages (see megatron_t2c.pipeline.main_job)."""

    run_dir: str = option(positional=True, help="the run directory (its data/ made by examples/quickstart.sh)")
    format: str = option("pangu", help="sample format of the training data and prompts", choices=("pangu", "pycodegpt"))
    model: str = option("pangu-100m", help="model preset; the size flags below override it")
    num_layers: Optional[int] = option(2, help="layers (0: the preset's)")
    hidden_size: Optional[int] = option(96, help="hidden size (0: the preset's)")
    num_attention_heads: Optional[int] = option(4, help="attention heads (0: the preset's)")
    seq_length: Optional[int] = option(512, help="context length (0: the preset's 1024)")
    micro_batch_size: int = option(4, help="sequences per micro-batch")
    global_batch_size: int = option(4, help="sequences per optimiser step")
    mapt_iters: int = option(200, help="MAPT optimiser steps")
    mapt_lr: Optional[float] = option(1e-3, help="MAPT peak learning rate (None: the paper's 1e-4)")
    mapt_min_lr: Optional[float] = option(1e-4, help="MAPT final learning rate (None: the paper's 5e-6)")
    mrpt_epochs: float = option(0.08, help="MRPT epochs over the text-code pairs")
    mrpt_lr: Optional[float] = option(3e-4, help="MRPT peak learning rate (None: the paper's 1e-5)")
    mrpt_min_lr: Optional[float] = option(3e-5, help="MRPT final learning rate (None: the paper's 5e-6)")
    runs: list[str] = option(default_factory=lambda: list(DEFAULT_RUNS),
                             help="MRPT runs as OBJECTIVE:SEPARATION")
    max_new_tokens: int = option(64, help="generation limit per sample")
    n_samples: int = option(10, help="samples per problem for pass@k (k <= n)")
    sample_problems: int = option(20, help="problems per benchmark that get --n-samples samples")
    incremental_prompts: int = option(60, help="incremental prompts per benchmark: the first whole problems (each with "
                                                  "its plain prompt) that fit in this many prompts")
    greedy_problems: Optional[int] = option(None, help="problems per benchmark for greedy pass@1 (None: all)")
    eval_batch_size: int = option(32, help="sequences decoded together")
    workers: int = option(os.cpu_count() or 1, help="execution sandbox workers")
    export: list[str] = option(default_factory=lambda: ["mapt", "mrpt_code_full"],
                               help="runs exported to Hugging Face (with --verify)")
    nproc_per_node: int = option(1, help="processes for training and generation (>1: torchrun)")
    cpu: Optional[bool] = option(None, help="compute on the CPU (default: when there is no CUDA device)")
    mbpp_path: Optional[str] = option(None, help="the official mbpp.jsonl (default: $T2C_MBPP, "
                                      "../shared/data/mbpp.jsonl, the user cache, else downloaded once; without "
                                      "it MBPP is skipped)")
    seed: int = option(1234, help="random seed")


class Pipeline:
    """Runs the stages of a :class:`PipelineConfig`, skipping finished ones and timing the others."""

    def __init__(self, config: PipelineConfig, out=None):
        if config.cpu is None:
            import torch

            config = dataclasses.replace(config, cpu=not torch.cuda.is_available())
        self.c, self.out = config, out or sys.stdout  # resolved now: a default bound at import goes stale
        self.run_dir = os.path.abspath(config.run_dir)
        self.data = os.path.join(self.run_dir, "data")
        self.timings_path = os.path.join(self.run_dir, "timings.json")
        self.timings = json.load(open(self.timings_path)) if os.path.exists(self.timings_path) else {}

    # -- stage bookkeeping ---------------------------------------------------------------------------
    def stage(self, name: str, done: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` unless ``done`` exists; record its time; write ``done`` (a marker) if ``fn`` did not."""
        if os.path.exists(done):
            self._say(f"== {name}: done already")
            return
        self._say(f"== {name}")
        start = time.time()
        fn()
        seconds = round(time.time() - start, 1)
        if not os.path.exists(done):
            os.makedirs(os.path.dirname(done), exist_ok=True)
            with open(done, "w") as fh:
                fh.write(f"{seconds}\n")
        self.timings[name] = seconds
        write_json(self.timings_path, self.timings)
        self._say(f"== {name}: {seconds:.0f} s")

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _launch(self, command: str, args: Sequence[str], entry: Callable[[list], object]) -> None:
        """Run ``t2c COMMAND args``: in this process, or under torchrun with several processes."""
        if self.c.nproc_per_node <= 1:
            entry(list(args))
            return
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(self.c.nproc_per_node),
               "--master-port", str(29500 + os.getpid() % 1000), "-m", "megatron_t2c", command, *args]
        subprocess.run(cmd, check=True)

    # -- training ------------------------------------------------------------------------------------
    def _model_args(self) -> list[str]:
        c = self.c
        args = ["--model", c.model]
        for flag, value in (("--num-layers", c.num_layers), ("--hidden-size", c.hidden_size),
                            ("--num-attention-heads", c.num_attention_heads), ("--seq-length", c.seq_length)):
            if value:
                args += [flag, str(value)]
        return args + (["--cpu"] if self.c.cpu else ["--precision", "bf16"])

    def _train_args(self, name: str) -> list[str]:
        c = self.c
        run = os.path.join(self.run_dir, "train", name)
        return self._model_args() + [
            "--format", c.format, "--tokenizer-model", os.path.join(self.data, "tokenizer.model"),
            "--micro-batch-size", str(c.micro_batch_size), "--global-batch-size", str(c.global_batch_size),
            "--seed", str(c.seed), "--save", os.path.join(run, "checkpoints"), "--load", os.path.join(run, "checkpoints"),
            "--save-interval", "100", "--keep-checkpoints", "2", "--log-interval", "25",
            "--log-jsonl", os.path.join(run, "log.jsonl"), "--tensorboard-dir", os.path.join(run, "tensorboard"),
            "--data-cache-path", os.path.join(self.run_dir, "train", "index_cache"),
            "--eval-iters", "4", "--eval-interval", "100"]

    def _pretrain(self, args: list[str]) -> None:
        from megatron_t2c.training.config import parse_run_config
        from megatron_t2c.training.loop import pretrain

        self._launch("train", args, lambda a: pretrain(parse_run_config(a), console=self.out))

    def train(self) -> list[str]:
        """MAPT, then every MRPT run; returns the run names."""
        c = self.c
        mapt = self._train_args("mapt") + [
            "--stage", "mapt", "--separation", "none", "--objective", "text-code",
            "--data-path", os.path.join(self.data, f"{c.format}_all"), "--train-iters", str(c.mapt_iters)]
        mapt += _optional("--lr", c.mapt_lr) + _optional("--min-lr", c.mapt_min_lr)
        self.stage("MAPT", self._done("train", "mapt"), lambda: self._pretrain(mapt))
        names = ["mapt"]
        for spec in c.runs:
            objective, _, separation = spec.partition(":")
            name = f"mrpt_{objective.replace('-', '_')}_{separation}"
            args = self._train_args(name) + [
                "--stage", "mrpt", "--separation", separation, "--objective", objective,
                "--init-from", os.path.join(self.run_dir, "train", "mapt", "checkpoints"),
                "--data-path", os.path.join(self.data, f"{c.format}_text_code"), "--epochs", str(c.mrpt_epochs)]
            args += _optional("--lr", c.mrpt_lr) + _optional("--min-lr", c.mrpt_min_lr)
            self.stage(f"MRPT {objective} / {separation}", self._done("train", name),
                       lambda args=args: self._pretrain(args))
            names.append(name)
        return names

    def _done(self, *parts: str) -> str:
        return os.path.join(self.run_dir, *parts, ".done")

    # -- evaluation ----------------------------------------------------------------------------------
    def evaluate(self, name: str) -> None:
        """Greedy, sampled and incremental samples on HumanEval and MBPP, executed in the sandbox."""
        c = self.c
        ckpt = os.path.join(self.run_dir, "train", name, "checkpoints")
        modes = {
            "greedy": ["--greedy"] + _optional("--limit", c.greedy_problems),
            "sampled": ["--n-samples", str(c.n_samples), "--temperature", "0.95", "--top-p", "0.8",
                        "--limit", str(c.sample_problems)],
            "incremental": ["--incremental", "--greedy", "--limit", str(c.incremental_prompts)],
        }
        from megatron_t2c.analysis import code_loss

        mbpp_path = self.mbpp_path()
        for task in ("humaneval", "mbpp") if mbpp_path else ("humaneval",):
            out_dir = os.path.join(self.run_dir, "eval", name, task)
            os.makedirs(out_dir, exist_ok=True)
            for mode, flags in modes.items():
                samples = os.path.join(out_dir, f"{mode}.samples.jsonl")
                args = ["--task", task, "--checkpoint", ckpt, "--output", samples, "--max-new-tokens",
                        str(c.max_new_tokens), "--batch-size", str(c.eval_batch_size), "--seed", str(c.seed),
                        "--no-progress", *flags] + (["--cpu"] if c.cpu else ["--dtype", "bf16"])
                args += ["--mbpp-path", mbpp_path] if task == "mbpp" else []
                self.stage(f"generate {name} {task} {mode}", samples + ".done",
                           lambda args=args: self._generate(args))
                summary = os.path.join(out_dir, f"{mode}.summary.json")
                exec_args = ["--task", task, "--samples", samples, "--output",
                             os.path.join(out_dir, f"{mode}.results.jsonl"), "--summary", summary,
                             "--workers", str(c.workers), "--no-progress"]
                exec_args += ["--mbpp-path", mbpp_path] if task == "mbpp" else []
                self.stage(f"execute {name} {task} {mode}", summary, lambda a=exec_args: self._execute(a))
        self.stage(f"code loss {name}", code_loss.result_path(self.run_dir, name),
                   lambda: code_loss.measure(code_loss.CodeLossConfig(
                       checkpoint=ckpt, output=code_loss.result_path(self.run_dir, name), mbpp_path=mbpp_path,
                       tasks=["humaneval", "mbpp"] if mbpp_path else ["humaneval"], cpu=bool(c.cpu),
                       progress=False)))

    def mbpp_path(self) -> Optional[str]:
        """The official mbpp.jsonl (found, or downloaded once into the user cache), or None when it cannot be
        had: then MBPP is skipped, the console says why and how to provide it, and ``eval/mbpp_skipped.json``
        keeps that for the report.  Resolved once per run."""
        if not hasattr(self, "_mbpp"):
            from megatron_t2c.evaluation.tasks.mbpp import MbppUnavailable, how_to_provide, resolve_mbpp_path

            skipped = os.path.join(self.run_dir, "eval", "mbpp_skipped.json")
            try:
                self._mbpp: Optional[str] = str(resolve_mbpp_path(self.c.mbpp_path))
                if os.path.exists(skipped):
                    os.remove(skipped)
            except MbppUnavailable as exc:
                self._mbpp = None
                write_json(skipped, {"reason": str(exc), "how_to_provide": how_to_provide()})
                self._say(f"== MBPP skipped: {exc}\n   HumanEval runs; provide MBPP and re-run to add it "
                          "(finished stages are kept)")
        return self._mbpp

    def _generate(self, args: list[str]) -> None:
        from megatron_t2c.evaluation.generate import main as generate_main

        self._launch("evaluate", ["generate", *args], lambda a: generate_main(a[1:]))

    def _execute(self, args: list[str]) -> None:
        from megatron_t2c.evaluation.execute import main as execute_main

        execute_main(args)

    # -- export and report ---------------------------------------------------------------------------
    def export(self, name: str) -> None:
        out = os.path.join(self.run_dir, "hf", name)
        ckpt = os.path.join(self.run_dir, "train", name, "checkpoints")
        cmd = [sys.executable, "-m", "megatron_t2c", "convert", "--to-hf", "--load", ckpt,
               "--output", out, "--verify", "--verify-json", os.path.join(out, "verify.json")]
        self.stage(f"export {name} to Hugging Face", os.path.join(out, "verify.json"),
                   lambda: subprocess.run(cmd, check=True))

    def report(self) -> None:
        cmd = [sys.executable, "-m", "megatron_t2c", "report", self.run_dir]
        cmd += ["--mbpp-path", self.mbpp_path()] if self.mbpp_path() else []
        self._say("== report")
        start = time.time()
        subprocess.run(cmd, check=True)
        self.timings["report"] = round(time.time() - start, 1)
        write_json(self.timings_path, self.timings)
        self._say(f"== report: {os.path.join(self.run_dir, 'report.md')}")

    def run(self) -> None:
        if not os.path.exists(os.path.join(self.data, "tokenizer.model")):
            raise SystemExit(f"error: {self.data} has no tokenizer.model: run examples/quickstart.sh first")
        write_json(os.path.join(self.run_dir, "pipeline_config.json"), dataclasses.asdict(self.c))
        names = self.train()
        for name in names:
            self.evaluate(name)
        for name in self.c.export:
            if name in names:
                self.export(name)
        self.report()


def _optional(flag: str, value) -> list[str]:
    return [] if value is None else [flag, str(value)]
