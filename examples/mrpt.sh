#!/usr/bin/env bash
# MRPT: modality-relative continuation of a MAPT model (paper §2.2) with one objective and one separation,
# with the paper's budget (§3.5): 10 epochs for the PanGu-Coder presets, 5 for PyCodeGPT, batches of 1,024
# rows of 1,024 tokens (whole documents packed per row), warm-up 1% of the steps.
#
#   bash examples/mrpt.sh OBJECTIVE SEPARATION [MODEL]
#     OBJECTIVE:  text-code | code | corrupt-code | prefix-code
#     SEPARATION: none | partial (PES) | full (FES) | auto
#     MODEL:      pangu-100m (default, pangu format), pangu-350m, pycodegpt-100m (pycodegpt format)
#
# Inputs:  $DATA_DIR/<format>_text_code.{bin,idx} (docstring-code pairs), $TOKENIZER, and the MAPT checkpoint
#          $MAPT_CKPT (default $RUNS/mapt_<MODEL>/checkpoints, from examples/mapt.sh).
# Outputs: $RUNS/mrpt_<MODEL>_<OBJECTIVE>_<SEPARATION>/ -- checkpoints/, log.jsonl, tensorboard/.
# The first launch starts from the MAPT weights (code rows copied from them, a new optimiser and schedule);
# a re-launch resumes this run. Environment: see examples/common.sh, plus EPOCHS (10 pangu-*, 5 pycodegpt-*),
# GLOBAL_BATCH (1024), SEQ_LENGTH (1024), WARMUP (0.01), MICRO_BATCH (16; 8 for pangu-350m), TP (1), PP (1),
# SAVE_INTERVAL (500). DRY_RUN=1 prints the command.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
OBJECTIVE="${1:?usage: mrpt.sh OBJECTIVE SEPARATION [MODEL]}"
SEPARATION="${2:?usage: mrpt.sh OBJECTIVE SEPARATION [MODEL]}"
MODEL="${3:-pangu-100m}"
FORMAT="$(format_of "$MODEL")"
MAPT_CKPT="${MAPT_CKPT:-$RUNS/mapt_$MODEL/checkpoints}"
case "$MODEL" in pangu-350m) default_mb=8 ;; *) default_mb=16 ;; esac
case "$MODEL" in pycodegpt-*) default_epochs=5 ;; *) default_epochs=10 ;; esac
launch "$RUNS/mrpt_${MODEL}_${OBJECTIVE}_${SEPARATION}" \
  --model "$MODEL" --format "$FORMAT" --stage mrpt --objective "$OBJECTIVE" --separation "$SEPARATION" \
  --init-from "$MAPT_CKPT" --data-path "$DATA_DIR/${FORMAT}_text_code" --tokenizer-model "$TOKENIZER" \
  --epochs "${EPOCHS:-$default_epochs}" --global-batch-size "${GLOBAL_BATCH:-1024}" \
  --seq-length "${SEQ_LENGTH:-1024}" --lr-warmup-fraction "${WARMUP:-0.01}" --micro-batch-size "${MICRO_BATCH:-$default_mb}" \
  --tensor-model-parallel-size "${TP:-1}" --pipeline-model-parallel-size "${PP:-1}" \
  --save-interval "${SAVE_INTERVAL:-500}" --keep-checkpoints 2 --eval-interval 500 --eval-iters 10 \
  --log-interval 10
