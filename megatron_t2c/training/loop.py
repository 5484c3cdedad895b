"""The training loop of ``t2c train``: MAPT from scratch, MRPT from a MAPT checkpoint, exact resume.

Everything distributed is megatron-core's: the model-parallel groups, ``DistributedDataParallel`` (gradient
reduction, optionally the distributed optimiser), ``get_megatron_optimizer`` (Adam, clipping, fp16 loss
scaling), ``OptimizerParamScheduler`` (warm-up + cosine), the pipeline schedules of
``get_forward_backward_func`` and ``dist_checkpointing``.  This module wires them to our model, data,
objectives and checkpoints:

1. :func:`setup` builds the tokenizer, separation, model, optimiser, schedule and data of a
   :class:`~megatron_t2c.training.config.RunConfig`, then loads ``--load`` (resume) or ``--init-from`` (MRPT).
2. :meth:`Trainer.train` runs optimiser steps: each is the micro-batches of
   :class:`~megatron_t2c.data.gpt_datasets.StepBatches` through the schedule, the optimiser and the
   scheduler; logs (:class:`~megatron_t2c.training.metrics.StepLog`), validates, saves every
   ``--save-interval`` steps and at the end, and stops cleanly on SIGTERM or ``--exit-duration-mins``
   (after saving).

**Loss.** Each micro-batch returns the sum of its per-token losses and its number of loss tokens; megatron
(``calculate_per_token_loss``) divides the gradients by the step's total token count across micro-batches and
data-parallel ranks.  The loss of a step is therefore the mean over all its loss tokens, independent of how
the batch is split -- the property that makes TP/PP/DP runs reproduce single-rank losses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import sys
import time
from functools import partial
from typing import IO, Optional

import torch
import torch.distributed as dist

from megatron_t2c.training import checkpointing
from megatron_t2c.training.checkpointing import CheckpointError
from megatron_t2c.training.metrics import StepLog, default_peak_tflops, flops_per_token
from megatron_t2c.training.config import RunConfig
from megatron_t2c.data.gpt_datasets import (DataError, StepBatches, build_datasets, check_datasets, packing_figures,
                                            parse_blend, train_samples_for)

__all__ = ["Trainer", "setup", "pretrain", "TrainingError"]

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """The run's configuration cannot be trained (a clear message for the user)."""


# ---------------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------------

def _separated_ids(run: RunConfig, tokenizer, prefixes) -> list[int]:
    from megatron_t2c.data.modality_usage import count_dataset_usage
    from megatron_t2c.mrpt.separation import grammar_words, separated_token_ids

    pieces = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]
    mode = run.model.separation
    if mode != "auto":
        return separated_token_ids(mode, pieces, words=grammar_words(run.data.separation_tokens))
    doc = code = None
    for prefix in prefixes:
        d, c = count_dataset_usage(prefix, run.data.format, tokenizer.vocab_size)
        doc, code = (d, c) if doc is None else (doc + d, code + c)
    return separated_token_ids("auto", pieces, k=run.model.separation_k, doc_counts=doc, code_counts=code)


def apex_layer_norm_available() -> bool:
    """Whether megatron-core's local layer spec has Apex's ``FusedLayerNorm`` (the only LayerNorm there
    that supports sequence parallelism; its torch fallback asserts against it)."""
    from megatron.core.models.gpt import gpt_layer_specs

    return bool(getattr(gpt_layer_specs, "HAVE_APEX", False))


def check_parallel_flags(run: RunConfig) -> None:
    """Refuse, in one line each, the parallelism flags that cannot work together here."""
    p, t = run.parallel, run.training
    if p.sequence_parallel:
        if p.tensor_model_parallel_size <= 1:
            raise TrainingError("--sequence-parallel needs --tensor-model-parallel-size > 1 (it splits the sequence "
                                "across the tensor-parallel ranks)")
        if not apex_layer_norm_available():
            raise TrainingError("--sequence-parallel needs Apex: megatron-core's local layer spec then uses Apex's "
                                "FusedLayerNorm; its torch LayerNorm fallback does not support sequence parallelism")
    if p.overlap_param_gather and not t.use_distributed_optimizer:
        raise TrainingError("--overlap-param-gather needs --use-distributed-optimizer (it overlaps that "
                            "optimiser's parameter all-gather)")
    if p.overlap_param_gather and not p.overlap_grad_reduce:
        raise TrainingError("--overlap-param-gather needs --overlap-grad-reduce (as in Megatron-LM)")


def _transformer_config(run: RunConfig):
    t = run.training
    try:
        recompute = t.recompute()
    except ValueError as exc:
        raise TrainingError(str(exc)) from None
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[t.precision]
    return run.model.transformer_config(
        bf16=t.precision == "bf16", fp16=t.precision == "fp16", params_dtype=dtype, pipeline_dtype=dtype,
        calculate_per_token_loss=True, sequence_parallel=run.parallel.sequence_parallel, **recompute)


def _forward_step(data_iterator, model):
    """One micro-batch through the model: per-token losses, and the reduction megatron applies to them."""
    batch = next(data_iterator)
    losses = model(batch["input_ids"], batch["position_ids"], batch["attention_mask"], labels=batch["labels"],
                   loss_mask=batch["loss_mask"], label_modality=batch["label_modality"])
    return losses, partial(_loss_func, batch["loss_mask"])


def _loss_func(loss_mask: torch.Tensor, losses: torch.Tensor):
    total = (losses.float() * loss_mask).sum()
    tokens = loss_mask.sum().to(torch.int)
    return total, tokens, {"lm loss": torch.stack([total.detach(), tokens.detach().float()])}


def _reduce_losses(losses_reduced: list) -> tuple[float, int]:
    """Mean loss over the step's loss tokens, on every rank of the last stage (data-parallel all-reduce)."""
    from megatron.core import parallel_state

    if not losses_reduced:
        return float("nan"), 0
    sums = torch.stack([x["lm loss"] for x in losses_reduced]).sum(0)
    dist.all_reduce(sums, group=parallel_state.get_data_parallel_group(with_context_parallel=True))
    total, tokens = sums.tolist()
    return (total / tokens if tokens else float("nan")), int(tokens)


def _memory_gib(cpu: bool) -> float:
    """Peak GPU memory allocated by torch, or on a CPU run this process's resident set."""
    if not cpu and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2 ** 30
    import psutil

    return psutil.Process().memory_info().rss / 2 ** 30


def _is_last_rank() -> bool:
    return dist.get_rank() == dist.get_world_size() - 1


class _StopRequest:
    """SIGTERM / SIGINT -> stop after the current step (saving first); the decision is agreed by all ranks."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (tests): no handler
                pass

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Trainer:
    """A set-up run (see :func:`setup`)."""

    run: RunConfig
    tokenizer: object
    layout: object
    model: object  # megatron DDP around (Float16Module around) T2CGPTModel
    optimizer: object
    scheduler: object
    train_batches: StepBatches
    valid_batches: Optional[StepBatches]
    train_iters: int
    iteration: int
    consumed_samples: int
    run_info: dict
    stage: str
    console: IO[str]
    start_time: float

    # -- one step ---------------------------------------------------------------------------------
    def _forward_backward(self, micro_batches: list, forward_only: bool):
        from megatron.core.pipeline_parallel import get_forward_backward_func

        seq = self.run.model.architecture().seq_length
        return get_forward_backward_func()(
            forward_step_func=_forward_step, data_iterator=iter(micro_batches), model=[self.model],
            num_microbatches=len(micro_batches), seq_length=seq, micro_batch_size=self.run.training.micro_batch_size,
            decoder_seq_length=seq, forward_only=forward_only)

    def train_step(self) -> dict:
        """One optimiser step; returns its figures."""
        start = time.perf_counter()
        micro_batches = self.train_batches.step(self.consumed_samples)
        lr = self.scheduler.get_lr(self.optimizer.param_groups[0])  # the rate this step uses
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        losses_reduced = self._forward_backward(micro_batches, forward_only=False)
        update_ok, grad_norm, _ = self.optimizer.step()
        if update_ok:
            self.scheduler.step(increment=1)
        self.iteration += 1
        self.consumed_samples += self.train_batches.global_batch_size
        loss, tokens = _reduce_losses(losses_reduced)
        elapsed = time.perf_counter() - start
        return dict(loss=loss, loss_tokens=tokens, lr=lr, grad_norm=None if grad_norm is None else float(grad_norm),
                    skipped=not update_ok, step_time_s=elapsed)

    @contextlib.contextmanager
    def _parameters_gathered(self):
        """With ``--overlap-param-gather`` the distributed optimiser's all-gather of the updated parameters
        waits for the next forward pass (megatron's forward pre-hooks); gather them now, for a checkpoint or
        validation, and restore the overlap afterwards (as Megatron-LM does)."""
        if not getattr(self.model, "use_forward_hook", False):
            yield
            return
        self.model.disable_forward_pre_hook()  # forces a synchronous all-gather
        try:
            yield
        finally:
            self.model.enable_forward_pre_hook()

    def validate(self) -> Optional[tuple[float, int]]:
        """Mean loss over ``--eval-iters`` fixed global batches of the validation split."""
        if self.valid_batches is None or self.run.training.eval_iters <= 0:
            return None
        with self._parameters_gathered():
            return self._validate()

    def _validate(self) -> tuple[float, int]:
        self.model.eval()
        total = tokens = 0.0
        with torch.no_grad():
            for k in range(self.run.training.eval_iters):
                reduced = self._forward_backward(self.valid_batches.step(k * self.valid_batches.global_batch_size),
                                                 forward_only=True)
                loss, n = _reduce_losses(reduced)
                if n:
                    total += loss * n
                    tokens += n
        self.model.train()
        return (total / tokens if tokens else float("nan")), int(tokens)

    def save(self) -> Optional[str]:
        c = self.run.checkpoint
        if not c.save:
            return None
        with self._parameters_gathered():
            path = checkpointing.save_checkpoint(
                c.save, self.iteration, [self.model], self.optimizer, self.scheduler,
                progress={"iteration": self.iteration, "consumed_samples": self.consumed_samples},
                run_info=self.run_info, tokenizer_model=self.tokenizer, keep=c.keep_checkpoints)
        if _is_last_rank():
            self.console.write(f"saved checkpoint {path}\n")
            self.console.flush()
        return path

    # -- the loop ---------------------------------------------------------------------------------
    def train(self) -> dict:
        """Train to ``train_iters`` (or until stopped); returns a summary."""
        run, t = self.run, self.run.training
        arch = run.model.architecture()
        seq = arch.seq_length
        world = dist.get_world_size()
        per_token = flops_per_token(arch.num_layers, arch.hidden_size, run.model.ffn_hidden_size or 4 * arch.hidden_size,
                                    self.layout.padded_vocab_size, seq)  # positions score the base vocabulary
        peak = run.logging.peak_tflops or default_peak_tflops()
        logger = StepLog(active=_is_last_rank(), jsonl=run.logging.log_jsonl, tensorboard_dir=run.logging.tensorboard_dir,
                         log_interval=run.logging.log_interval, objective=t.objective, resumed_step=self.iteration,
                         console=self.console)
        if run.logging.wandb_project and _is_last_rank():
            from megatron_t2c.training.wandb_log import LogTee, WandbLog

            save_dir = run.logging.wandb_save_dir or (os.path.join(run.checkpoint.save, "wandb")
                                                      if run.checkpoint.save else None)
            logger = LogTee(logger, WandbLog(project=run.logging.wandb_project, name=run.logging.wandb_exp_name,
                                             save_dir=save_dir, config=run.as_dict(), resumed_step=self.iteration,
                                             console=self.console))
        stop = _StopRequest()
        stop_reason = None
        losses = []
        self.model.train()
        try:
            while self.iteration < self.train_iters:
                figures = self.train_step()
                tokens_per_s = self.train_batches.global_batch_size * seq / figures["step_time_s"]
                tflops = per_token * tokens_per_s / world / 1e12
                record = dict(step=self.iteration, train_iters=self.train_iters, loss=figures["loss"],
                              loss_tokens=figures["loss_tokens"], lr=figures["lr"],
                              grad_norm=figures["grad_norm"], loss_scale=float(self.optimizer.get_loss_scale()),
                              tokens_per_s=tokens_per_s, tflops_per_device=tflops,
                              mfu=(tflops / peak) if peak else None, step_time_s=figures["step_time_s"],
                              consumed_samples=self.consumed_samples, skipped=figures["skipped"],
                              precision=t.precision, objective=t.objective,
                              memory_gib=_memory_gib(run.parallel.cpu),
                              last=self.iteration == self.train_iters, time=time.time(),
                              process_time=time.process_time())
                logger.step(record)
                losses.append(figures["loss"])
                if t.eval_interval and t.eval_iters and self.iteration % t.eval_interval == 0:
                    result = self.validate()
                    if result:
                        logger.validation(self.iteration, *result)
                saved = False
                if run.checkpoint.save_interval and self.iteration % run.checkpoint.save_interval == 0:
                    self.save()
                    saved = True
                stop_reason = self._should_stop(stop)
                if stop_reason:
                    if not saved:
                        self.save()
                    break
            else:
                if t.eval_iters and not (t.eval_interval and self.iteration % t.eval_interval == 0):
                    result = self.validate()
                    if result:
                        logger.validation(self.iteration, *result)
                if run.checkpoint.save and not (run.checkpoint.save_interval and
                                                self.iteration % run.checkpoint.save_interval == 0):
                    self.save()
        finally:
            stop.restore()
            logger.close()
        if stop_reason and _is_last_rank():
            self.console.write(f"stopped at step {self.iteration}: {stop_reason}\n")
        return {"iteration": self.iteration, "train_iters": self.train_iters, "losses": losses,
                "stopped": stop_reason}

    def _should_stop(self, stop: _StopRequest) -> Optional[str]:
        """Agree across ranks on whether to stop now (a signal reached any rank, or the time is up)."""
        code = 0
        if stop.received is not None:
            code = 1
        limit = self.run.training.exit_duration_mins
        if limit is not None and (time.time() - self.start_time) / 60 >= limit:
            code = max(code, 2)
        flag = torch.tensor([code], dtype=torch.int32,
                            device="cpu" if self.run.parallel.cpu else torch.cuda.current_device())
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return {0: None, 1: "signal received", 2: "--exit-duration-in-mins reached"}[int(flag.item())]


def _train_iters(run: RunConfig, prefixes, global_batch: int, seq_length: int) -> int:
    t = run.training
    given = [x is not None for x in (t.train_iters, t.train_samples, t.epochs)]
    if sum(given) != 1:
        raise TrainingError("give exactly one of --train-iters, --train-samples, --epochs")
    if t.train_iters is not None:
        iters = t.train_iters
    else:
        samples = t.train_samples if t.train_samples is not None else train_samples_for(
            t.epochs, prefixes, run.data.split, seq_length, run.data.packing, t.seed)
        iters = math.ceil(samples / global_batch)
    if iters <= 0:
        raise TrainingError(f"nothing to train: {iters} steps")
    return iters


def model_flags_at_defaults(model) -> bool:
    """Whether the model config's preset and every architecture field are the flags' defaults (the user
    stated no architecture)."""
    from megatron_t2c.models.config import ARCHITECTURE_FIELDS

    defaults = {f.name: f.default for f in dataclasses.fields(model)}
    return all(getattr(model, name) == defaults.get(name) for name in ("preset", *ARCHITECTURE_FIELDS)
               if name in defaults)


def resolve_from_checkpoint(run: RunConfig, resume_from: Optional[str]) -> None:
    """Fill in what the starting checkpoint stores and the user left out (in place).

    Without ``--tokenizer-model``, the tokenizer stored in the ``--load`` checkpoint (resume) or the
    ``--init-from`` one.  With ``--init-from`` and no architecture flags (preset and every architecture field
    at their defaults), the checkpoint's architecture: ``ModelConfig.from_architecture`` of its run info plus
    the user's other model settings (separation, dropout, attention backend ...)."""
    c = run.checkpoint
    source = resume_from or c.init_from
    if run.data.tokenizer_model is None:
        stored = checkpointing.stored_tokenizer(source) if source else None
        if stored is None:
            where = f" ({source} stores no tokenizer)" if source else ""
            raise DataError(f"--tokenizer-model is required{where}")
        run.data.tokenizer_model = stored
    if c.init_from and not resume_from and model_flags_at_defaults(run.model):
        from megatron_t2c.models.config import ARCHITECTURE_FIELDS

        info = checkpointing.read_run_info(c.init_from)
        settings = {f.name: getattr(run.model, f.name) for f in dataclasses.fields(run.model)
                    if f.name not in ARCHITECTURE_FIELDS and f.name != "preset"}
        run.model = type(run.model).from_architecture(info["architecture"], **settings)


def setup(run: RunConfig, console: Optional[IO[str]] = None) -> Trainer:
    """Everything :meth:`Trainer.train` needs (the distributed state must not be initialised yet)."""
    from megatron.core import parallel_state

    console = console or sys.stdout
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
    from megatron.core.transformer.module import Float16Module

    from megatron_t2c.runtime import cpu_compat
    from megatron_t2c.runtime import distributed as parallel
    from megatron_t2c.models.gpt import build_model, make_layout
    from megatron_t2c.tokenizer.loading import TokenizerLoadError, open_tokenizer, tokenizer_fingerprint

    start_time = time.time()
    t, p, c = run.training, run.parallel, run.checkpoint
    # Which checkpoint starts the run: our own (resume), a MAPT one (MRPT), or none.
    resume_from = None
    if c.load and checkpointing.has_checkpoint(c.load):
        resume_from = checkpointing.resolve(c.load)
    resolve_from_checkpoint(run, resume_from)
    check_parallel_flags(run)
    parallel.initialize_distributed(p.tensor_model_parallel_size, p.pipeline_model_parallel_size, cpu=p.cpu,
                                    seed=t.seed)
    if c.load and not resume_from and _is_last_rank():  # nothing saved there yet: a new run (--save X --load X)
        console.write(f"no checkpoint in --load {c.load} yet: starting a new run\n")
    device = cpu_compat.device()
    try:
        tokenizer = open_tokenizer(run.data.tokenizer_model, megatron=True)
    except TokenizerLoadError as exc:
        raise DataError(f"--tokenizer-model {exc}") from None
    vocab_size = tokenizer.vocab_size
    prefixes, weights = parse_blend(run.data.data_path)
    check_datasets(prefixes, vocab_size, run.data.format)
    resumed_stage = checkpointing.read_run_info(resume_from).get("stage") if resume_from else None
    stage = t.resolved_stage(c.init_from, resumed_stage)
    if stage == "mapt" and run.model.separation != "none" and not resume_from:
        log.warning("MAPT with separation %r: the paper's MAPT is modality-agnostic (separation none)",
                    run.model.separation)

    separated = _separated_ids(run, tokenizer, prefixes)
    arch = run.model.architecture_dict()
    tokenizer_sha = tokenizer_fingerprint(run.data.tokenizer_model)
    if resume_from:
        info = checkpointing.read_run_info(resume_from)
        checkpointing.check_compatible(info, model=arch, vocab_size=vocab_size, tokenizer_sha256=tokenizer_sha,
                                       separated=separated, where=f"--load {resume_from}")
        for name, ours in (("format", run.data.format), ("objective", t.objective)):
            if info.get(name) != ours:
                raise CheckpointError(f"cannot resume {resume_from}: it was trained with {name} {info.get(name)!r}, "
                                      f"this run asks for {ours!r} (start a new run with --init-from instead)")
    elif c.init_from:
        info = checkpointing.read_run_info(c.init_from)
        if info["separated_ids"]:
            raise CheckpointError(f"--init-from {c.init_from} already has separation {info['separation']!r}: "
                                  "MRPT starts from a checkpoint without separation (MAPT); to continue that "
                                  "run, use --load")
        checkpointing.check_compatible(info, model=arch, vocab_size=vocab_size, tokenizer_sha256=tokenizer_sha,
                                       separated=None, where=f"--init-from {c.init_from}")

    # Model, wrapped for precision and data parallelism; optimiser and schedule.
    layout = make_layout(run.model, separated, vocab_size)
    tc = _transformer_config(run)
    module = build_model(run.model, layout, transformer_config=tc)
    module.to(device)
    if c.init_from and not resume_from:
        checkpointing.load_model_weights(c.init_from, [module], base_rows_only=True)
    if t.precision != "fp32":
        module = Float16Module(tc, module)
    model = DistributedDataParallel(
        tc, DistributedDataParallelConfig(grad_reduce_in_fp32=True, use_distributed_optimizer=t.use_distributed_optimizer,
                                          overlap_grad_reduce=p.overlap_grad_reduce,
                                          overlap_param_gather=p.overlap_param_gather),
        module=module)
    preset = t.preset(stage)
    optimizer = get_megatron_optimizer(OptimizerConfig(
        optimizer="adam", lr=preset.lr, min_lr=preset.min_lr, weight_decay=t.weight_decay, adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2, adam_eps=t.adam_eps, clip_grad=preset.clip_grad, bf16=t.precision == "bf16",
        fp16=t.precision == "fp16", params_dtype=tc.params_dtype, initial_loss_scale=t.initial_loss_scale,
        use_distributed_optimizer=t.use_distributed_optimizer, overlap_param_gather=p.overlap_param_gather), [model])
    tc.grad_scale_func = optimizer.scale_loss
    tc.no_sync_func = model.no_sync
    tc.finalize_model_grads_func = finalize_model_grads

    # Data.
    dp_size = parallel_state.get_data_parallel_world_size()
    per_step = t.micro_batch_size * dp_size
    global_batch = t.global_batch_size or per_step
    if global_batch % per_step:
        raise TrainingError(f"--global-batch-size {global_batch} is not a multiple of micro-batch x data-parallel "
                            f"size ({t.micro_batch_size} x {dp_size})")
    seq = run.model.architecture().seq_length
    train_iters = _train_iters(run, prefixes, global_batch, seq)
    warmup = int(round(t.lr_warmup_fraction * train_iters))
    scheduler = OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=preset.lr, min_lr=preset.min_lr, lr_warmup_steps=warmup,
        lr_decay_steps=train_iters, lr_decay_style=t.lr_decay_style, start_wd=t.weight_decay, end_wd=t.weight_decay,
        wd_incr_steps=train_iters, wd_incr_style="constant")
    valid_samples = t.eval_iters * global_batch
    train_ds, valid_ds, _ = build_datasets(
        prefixes, weights, split=run.data.split, seq_length=seq, sizes=[train_iters * global_batch, valid_samples, 0],
        seed=t.seed, tokenizer=tokenizer, cache_path=run.data.data_cache_path, packing=run.data.packing)
    if train_ds is None or len(train_ds) == 0:
        raise DataError(f"the training split ({run.data.split}) of {', '.join(prefixes)} is empty")
    packing = packing_figures(train_ds)
    if packing is not None and _is_last_rank():
        console.write(f"packing (whole documents, training split, one epoch): {packing['description']}\n")
    batch_args = dict(fmt=run.data.format, objective=t.objective, micro_batch_size=t.micro_batch_size,
                      num_microbatches=global_batch // per_step, dp_rank=parallel_state.get_data_parallel_rank(),
                      dp_size=dp_size, layout=layout, seed=t.seed, vocab_size=vocab_size, device=device)
    train_batches = StepBatches(train_ds, **batch_args)
    valid_batches = StepBatches(valid_ds, **batch_args) if valid_ds is not None and len(valid_ds) else None
    if t.eval_iters and valid_batches is None and _is_last_rank():
        console.write("warning: --eval-iters given but the validation split is empty: no validation\n")

    run_info = checkpointing.make_run_info(
        model_config=run.model, vocab_size=vocab_size, separation=run.model.separation, separated=separated,
        tokenizer_model=run.data.tokenizer_model, fmt=run.data.format, objective=t.objective, stage=stage,
        config=run.as_dict())
    if packing is not None:
        run_info["packing"] = {k: v for k, v in packing.items() if k != "description"}
    if run.model.separation == "partial":  # the PES word list itself, not only the ids it gave
        from megatron_t2c.mrpt.separation import PES_TOKENS_FILE, read_token_list

        words_file = run.data.separation_tokens or PES_TOKENS_FILE
        run_info["separation_tokens"] = {"file": os.path.abspath(words_file),
                                         "words": list(read_token_list(words_file))}
    iteration = consumed = 0
    if resume_from:
        progress = checkpointing.load_checkpoint(resume_from, [model], optimizer, scheduler,
                                                 load_optim=c.load_optim, load_rng=c.load_rng)
        iteration, consumed = int(progress.get("iteration", 0)), int(progress.get("consumed_samples", 0))
    if _is_last_rank():
        n_params = sum(p.numel() for p in module.parameters())
        console.write(
            f"megatron_t2c | {stage.upper()} | objective {t.objective} | separation {run.model.separation} "
            f"({len(separated)} code rows) | TP {p.tensor_model_parallel_size} PP {p.pipeline_model_parallel_size} "
            f"DP {dp_size} | {n_params / 1e6:.2f}M parameters on this rank | global batch {global_batch} x {seq} | "
            f"{train_iters} steps" + (f" | resumed at step {iteration}" if resume_from else "")
            + (f" | initialised from {c.init_from}" if c.init_from and not resume_from else "") + "\n")
        console.flush()
    return Trainer(run=run, tokenizer=tokenizer, layout=layout, model=model, optimizer=optimizer, scheduler=scheduler,
                   train_batches=train_batches, valid_batches=valid_batches, train_iters=train_iters,
                   iteration=iteration, consumed_samples=consumed, run_info=run_info, stage=stage, console=console,
                   start_time=start_time)


def pretrain(run: RunConfig, console: Optional[IO[str]] = None) -> dict:
    """Set up, train, tear down; returns :meth:`Trainer.train`'s summary."""
    from megatron_t2c.runtime import distributed as parallel

    try:
        trainer = setup(run, console)
        return trainer.train()
    finally:
        parallel.destroy_distributed()
