"""The configuration of a training run (``t2c train``): dataclasses whose fields are the flags.

``ModelConfig`` (:mod:`megatron_t2c.models.gpt`) holds the architecture and the separation; the classes here
hold the data, the objective and schedule, parallelism and precision, checkpoints and logging.  Every field is
a ``--kebab-case`` flag (see :mod:`megatron_t2c.utils.dataclass_flags`), and ``--config run.yaml`` loads any of
them from YAML.

Stage presets (paper §3.5): ``--stage mapt`` (the default without ``--init-from``) trains from scratch with
learning rate 1e-4 -> 5e-6 and gradient clipping 3.0; ``--stage mrpt`` (the default with ``--init-from``)
continues with 1e-5 -> 5e-6 and clipping 1.0.  Flags given explicitly (``--lr``, ``--min-lr``,
``--clip-grad``) override the preset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from megatron_t2c.utils.dataclass_flags import option
from megatron_t2c.mrpt.formats import FORMATS
from megatron_t2c.mrpt.objectives import OBJECTIVES

STAGES = ("mapt", "mrpt")
PRECISIONS = ("fp32", "bf16", "fp16")
RECOMPUTE_GRANULARITIES = ("selective", "full")
RECOMPUTE_METHODS = ("uniform", "block")


@dataclass(frozen=True)
class StagePreset:
    """Learning rates and clipping of one training stage (paper §3.5)."""

    lr: float
    min_lr: float
    clip_grad: float


STAGE_PRESETS = {"mapt": StagePreset(1e-4, 5e-6, 3.0), "mrpt": StagePreset(1e-5, 5e-6, 1.0)}


@dataclass(kw_only=True)
class DataConfig:
    """Data: indexed datasets from ``t2c preprocess``, blended, split and packed by megatron-core."""

    data_path: list[str] = option(help="dataset prefixes, optionally weighted: 'PREFIX' or '0.7 A 0.3 B' "
                                  "(weights are relative; unweighted prefixes blend by size)",
                                  metavar="[WEIGHT] PREFIX")
    split: str = option("98,2,0", help="train,valid,test proportions of each dataset's documents")
    tokenizer_model: Optional[str] = option(None, help="the SentencePiece model or Hugging Face tokenizer "
                                            "directory the datasets were made with (default: the one stored "
                                            "in the --load or --init-from checkpoint)", metavar="PATH")
    format: str = option("pangu", help="sample format of the datasets", choices=FORMATS)
    data_cache_path: Optional[str] = option(None, help="where megatron-core caches the sample indices (built "
                                            "once by rank 0 and copied to nodes that do not see it); "
                                            "default: beside each dataset")
    packing: str = option("whole", help="rows of whole documents plus padding, none ever cut (the paper's "
                          "packing, Appendix B.3), or megatron's continuous packing that cuts documents "
                          "anywhere", choices=("whole", "continuous"))
    separation_tokens: Optional[str] = option(None, help="with --separation partial (PES): the word list, one "
                                              "token per line (default: the pinned list shipped in "
                                              "megatron_t2c/mrpt/python_tokens.txt; the release's "
                                              "source/python_tokens.txt reproduces its PES rows)",
                                              metavar="FILE")


@dataclass(kw_only=True)
class TrainingConfig:
    """Objective, batch, schedule and optimiser (defaults: paper §3.5)."""

    stage: Optional[str] = option(None, help="preset for --lr/--min-lr/--clip-grad: mapt (1e-4 -> 5e-6, clip "
                                  "3.0) or mrpt (1e-5 -> 5e-6, clip 1.0); default: mrpt with --init-from, "
                                  "else mapt", choices=STAGES)
    objective: str = option("text-code", help="training objective (paper §2.2.2)", choices=OBJECTIVES)
    micro_batch_size: int = option(4, help="sequences per micro-batch per data-parallel rank")
    global_batch_size: Optional[int] = option(None, help="sequences per optimiser step (a multiple of "
                                              "micro-batch x data-parallel size; the rest is gradient "
                                              "accumulation); default: micro-batch x data-parallel size")
    train_iters: Optional[int] = option(None, help="optimiser steps to train for")
    train_samples: Optional[int] = option(None, help="or: sequences to train on")
    epochs: Optional[float] = option(None, help="or: passes over the training split (as in the paper)")
    lr: Optional[float] = option(None, help="peak learning rate (default: the stage's)")
    min_lr: Optional[float] = option(None, help="final learning rate of the cosine decay (default: the stage's)")
    lr_warmup_fraction: float = option(0.01, help="linear warm-up over this fraction of the steps")
    lr_decay_style: str = option("cosine", help="decay after warm-up", choices=("cosine", "linear", "constant"))
    weight_decay: float = option(0.01, help="decoupled weight decay (AdamW)")
    adam_beta1: float = option(0.9, help="Adam beta1")
    adam_beta2: float = option(0.95, help="Adam beta2")
    adam_eps: float = option(1e-8, help="Adam epsilon")
    clip_grad: Optional[float] = option(None, help="gradient clipping by global norm (default: the stage's)")
    precision: str = option("fp32", help="bf16, fp16 (dynamic loss scaling) or fp32", choices=PRECISIONS,
                            consts={"--bf16": "bf16", "--fp16": "fp16"})
    initial_loss_scale: float = option(2.0 ** 16, help="fp16: the first dynamic loss scale")
    recompute_granularity: Optional[str] = option(
        None, help="activation recomputation: selective (the attention core) or full (whole layers, see "
        "--recompute-method); default: none", choices=RECOMPUTE_GRANULARITIES,
        consts={"--recompute-activations": "selective"})
    recompute_method: Optional[str] = option(
        None, help="with full recomputation: uniform (checkpoint groups of --recompute-num-layers layers) or "
        "block (recompute the first --recompute-num-layers layers of each pipeline stage); default: uniform",
        choices=RECOMPUTE_METHODS)
    recompute_num_layers: Optional[int] = option(
        None, help="with full recomputation: layers per group (uniform) or per stage (block); default 1")
    use_distributed_optimizer: bool = option(False, help="shard optimiser state over data-parallel ranks")
    seed: int = option(1234, help="random seed (weights, dropout, data order, corruption)")
    eval_interval: int = option(0, help="validate every N steps (0: only at the end when --eval-iters > 0)")
    eval_iters: int = option(0, help="global batches per validation (0: no validation)")
    exit_duration_mins: Optional[float] = option(None, help="save and exit after this many minutes",
                                                 flag="--exit-duration-in-mins", aliases=("--exit-duration-mins",))

    def recompute(self) -> dict:
        """megatron-core's TransformerConfig recompute fields for these flags (empty: no recomputation)."""
        if self.recompute_granularity is None:
            if self.recompute_method is not None or self.recompute_num_layers is not None:
                raise ValueError("--recompute-method/--recompute-num-layers need --recompute-granularity full")
            return {}
        if self.recompute_granularity == "selective":
            if self.recompute_method is not None or self.recompute_num_layers is not None:
                raise ValueError("--recompute-method/--recompute-num-layers apply to --recompute-granularity full "
                                 "only (selective recomputes the attention core of every layer)")
            return {"recompute_granularity": "selective"}
        layers = 1 if self.recompute_num_layers is None else self.recompute_num_layers
        if layers < 1:
            raise ValueError(f"--recompute-num-layers must be at least 1, got {layers}")
        return {"recompute_granularity": "full", "recompute_method": self.recompute_method or "uniform",
                "recompute_num_layers": layers}

    def resolved_stage(self, init_from: Optional[str], resumed_stage: Optional[str] = None) -> str:
        """``--stage``, else the stage of the checkpoint being resumed, else mrpt with --init-from, else mapt."""
        return self.stage or resumed_stage or ("mrpt" if init_from else "mapt")

    def preset(self, stage: str) -> StagePreset:
        """The stage's preset with explicit flags applied."""
        base = STAGE_PRESETS[stage]
        return StagePreset(lr=base.lr if self.lr is None else self.lr,
                           min_lr=base.min_lr if self.min_lr is None else self.min_lr,
                           clip_grad=base.clip_grad if self.clip_grad is None else self.clip_grad)


@dataclass(kw_only=True)
class ParallelConfig:
    """Parallelism and device."""

    tensor_model_parallel_size: int = option(1, help="ranks each layer is split across")
    pipeline_model_parallel_size: int = option(1, help="pipeline stages (the data-parallel size is the rest)")
    cpu: bool = option(False, help="compute on the CPU with gloo (development and tests); default: CUDA/NCCL")
    sequence_parallel: bool = option(False, help="split LayerNorm and dropout activations along the sequence "
                                     "across the tensor-parallel ranks (needs --tensor-model-parallel-size > 1 "
                                     "and Apex's fused LayerNorm)")
    overlap_grad_reduce: bool = option(False, help="overlap the data-parallel gradient all-reduce (or "
                                       "reduce-scatter) with the backward pass, bucket by bucket")
    overlap_param_gather: bool = option(False, help="overlap the distributed optimizer's parameter all-gather "
                                        "with the next forward pass (needs --use-distributed-optimizer and "
                                        "--overlap-grad-reduce)")


@dataclass(kw_only=True)
class CheckpointConfig:
    """Checkpoints (megatron dist_checkpointing; see megatron_t2c.training.checkpointing)."""

    save: Optional[str] = option(None, help="directory to save checkpoints in")
    save_interval: int = option(0, help="save every N steps (and always at the end); 0: only at the end")
    keep_checkpoints: Optional[int] = option(None, help="keep only the newest K checkpoints")
    load: Optional[str] = option(None, help="resume this run from its checkpoints (model, optimiser, "
                                 "schedule, loss scale, RNG, data position); a directory without "
                                 "checkpoints starts afresh")
    init_from: Optional[str] = option(None, help="start a new run (MRPT) from the weights of a checkpoint "
                                      "without separation (MAPT); code rows start as copies",
                                      aliases=("--pretrained-checkpoint",))
    load_optim: bool = option(True, help="with --load: restore the optimiser state and the learning-rate "
                              "schedule (--no-load-optim starts them afresh, keeping the step count and data "
                              "position)")
    load_rng: bool = option(True, help="with --load: restore the random-number generators (--no-load-rng "
                            "reseeds them from --seed)")


@dataclass(kw_only=True)
class LoggingConfig:
    """Console, JSONL and TensorBoard."""

    log_interval: int = option(10, help="console/TensorBoard line every N steps")
    log_jsonl: Optional[str] = option(None, help="append one JSON object per step here (step, loss, lr, "
                                      "grad_norm, tokens_per_s, ...)")
    tensorboard_dir: Optional[str] = option(None, help="TensorBoard event directory")
    peak_tflops: Optional[float] = option(None, help="per-device peak TFLOP/s for MFU (default: 989 on "
                                          "H100/H200, none on CPU)")
    wandb_project: Optional[str] = option(None, help="also log to this Weights & Biases project (needs the "
                                          "[wandb] extra; WANDB_MODE=offline works without network)")
    wandb_exp_name: Optional[str] = option(None, help="the Weights & Biases run name (default: wandb's)")
    wandb_save_dir: Optional[str] = option(None, help="where wandb writes its files (default: beside "
                                           "--save, else ./wandb)")


@dataclass
class RunConfig:
    """All of a run's configs."""

    model: object
    data: DataConfig
    training: TrainingConfig
    parallel: ParallelConfig
    checkpoint: CheckpointConfig
    logging: LoggingConfig

    def as_dict(self) -> dict:
        return {name: dataclasses.asdict(getattr(self, name)) for name in
                ("model", "data", "training", "parallel", "checkpoint", "logging")}


def config_classes() -> tuple[type, ...]:
    from megatron_t2c.models.config import ModelConfig

    return (ModelConfig, DataConfig, TrainingConfig, ParallelConfig, CheckpointConfig, LoggingConfig)


EPILOG = """\
examples:
  # MAPT from scratch on one CPU process (tiny model)
  python pretrain_t2c.py --cpu --model pangu-100m --num-layers 2 --hidden-size 64 --num-attention-heads 4 \\
      --seq-length 256 --data-path runs/quickstart/data/pangu_all --tokenizer-model runs/quickstart/data/tokenizer.model \\
      --train-iters 100 --micro-batch-size 4 --save runs/mapt --save-interval 50 --log-jsonl runs/mapt/log.jsonl
  # MRPT: code objective with partial separation, from the MAPT checkpoint, 2 GPUs
  torchrun --nproc-per-node 2 pretrain_t2c.py --model pangu-100m --data-path DATA/pangu_text_code \\
      --tokenizer-model DATA/tokenizer.model --init-from runs/mapt --separation partial --objective code \\
      --epochs 5 --global-batch-size 64 --bf16 --save runs/mrpt --load runs/mrpt
"""


def parse_run_config(argv=None) -> RunConfig:
    """Parse the command line (and ``--config`` YAML) into a :class:`RunConfig`."""
    from megatron_t2c.utils.dataclass_flags import parse_configs

    parts = parse_configs(*config_classes(), argv=argv, epilog=EPILOG,
                          description="Pre-train a text-to-code GPT (MAPT) or continue it with modality-relative "
                                      "pre-training (MRPT) on megatron-core.")
    return RunConfig(*parts)
