#!/usr/bin/env bash
# MAPT: modality-agnostic pre-training from scratch (paper §2.1): separation none, objective text-code, on
# text and code together, with the paper's budget (§3.5): 500K steps of 1,024 rows of 1,024 tokens (whole
# documents packed per row), warm-up 1% of the steps. Usage:
#
#   bash examples/mapt.sh [MODEL]          MODEL: pangu-100m (default), pangu-350m or pycodegpt-100m
#
# Inputs:  $DATA_DIR/<format>_all.{bin,idx} (every function, with and without docstring) and $TOKENIZER;
#          <format> is pangu for the PanGu-Coder presets, pycodegpt for pycodegpt-100m.
# Outputs: $RUNS/mapt_<MODEL>/ -- checkpoints/ (the MRPT starting point), log.jsonl, tensorboard/.
# Re-running resumes from the last checkpoint. Environment: see examples/common.sh, plus TRAIN_ITERS
# (500000), GLOBAL_BATCH (1024), SEQ_LENGTH (1024), WARMUP (0.01), MICRO_BATCH (16; 8 for pangu-350m),
# TP (1), PP (1), SAVE_INTERVAL (1000). DRY_RUN=1 prints the command.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
MODEL="${1:-pangu-100m}"
FORMAT="$(format_of "$MODEL")"
case "$MODEL" in pangu-350m) default_mb=8 ;; *) default_mb=16 ;; esac
launch "$RUNS/mapt_$MODEL" \
  --model "$MODEL" --format "$FORMAT" --stage mapt --separation none --objective text-code \
  --data-path "$DATA_DIR/${FORMAT}_all" --tokenizer-model "$TOKENIZER" \
  --train-iters "${TRAIN_ITERS:-500000}" --global-batch-size "${GLOBAL_BATCH:-1024}" \
  --seq-length "${SEQ_LENGTH:-1024}" --lr-warmup-fraction "${WARMUP:-0.01}" \
  --micro-batch-size "${MICRO_BATCH:-$default_mb}" \
  --tensor-model-parallel-size "${TP:-1}" --pipeline-model-parallel-size "${PP:-1}" \
  --save-interval "${SAVE_INTERVAL:-1000}" --keep-checkpoints 3 --eval-interval 1000 --eval-iters 10 \
  --log-interval 10
