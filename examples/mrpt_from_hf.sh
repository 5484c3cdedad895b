#!/usr/bin/env bash
# MRPT on a public code model: import a Hugging Face GPT-Neo or GPT-2 checkpoint (e.g. PyCodeGPT-110M, the
# backbone of the paper's Table 2a) with its own BPE tokenizer, preprocess docstring-code pairs with that
# tokenizer, train MRPT, evaluate zero-shot on HumanEval (and MBPP when available), export back.
#
#   bash examples/mrpt_from_hf.sh HF_DIR OBJECTIVE SEPARATION
#     HF_DIR:     a save_pretrained directory: config.json, model.safetensors (or pytorch_model.bin) and the
#                 tokenizer (tokenizer.json, or vocab.json + merges.txt). PyCodeGPT: huggingface-cli download
#                 Daoguang/PyCodeGPT --local-dir hf/pycodegpt   (on a machine with network access)
#     OBJECTIVE:  text-code | code | corrupt-code | prefix-code
#     SEPARATION: none | partial (PES: Python-grammar pieces, with and without GPT-2's "Ġ") | full (FES)
#
# Stages (each skipped when its output exists, so a re-run resumes):
#   1. import   tools/convert_checkpoint.py --from-hf --verify: the markers become special tokens with rows
#               initialised as the mean row; logits checked against the HF model (<= 1e-4, fp32)
#   2. data     functions from CORPUS (default: this interpreter's standard library), docstring-code pairs
#               tokenised with HF_DIR's tokenizer, in the PyCodeGPT format ([sos] signature [descr] ...)
#   3. MRPT     pretrain_t2c.py --init-from the import: architecture and tokenizer come from the checkpoint
#   4. eval     HumanEval (and MBPP when found), greedy pass@1
#   5. export   the stock class (GPTNeoForCausalLM / GPT2LMHeadModel) when SEPARATION is none and the
#               objective is not prefix-code, else T2CForCausalLM (remote code); --verify
# Environment: RUN_DIR (runs/from_hf_<name>_<OBJECTIVE>_<SEPARATION>), CORPUS, FORMAT (pycodegpt),
# EPOCHS (5, the paper's for PyCodeGPT), GLOBAL_BATCH (1024), MICRO_BATCH (16), SEQ_LENGTH (the model's),
# TRAIN_ITERS (instead of EPOCHS), LIMIT (evaluate only the first N problems), N_SAMPLES (1: greedy),
# MAX_NEW_TOKENS (300), plus examples/common.sh's (CPU=1, GPUS_PER_NODE, NNODES, TP, PP, EXTRA_ARGS ...).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
HF_DIR="${1:?usage: mrpt_from_hf.sh HF_DIR OBJECTIVE SEPARATION}"
OBJECTIVE="${2:?usage: mrpt_from_hf.sh HF_DIR OBJECTIVE SEPARATION}"
SEPARATION="${3:?usage: mrpt_from_hf.sh HF_DIR OBJECTIVE SEPARATION}"
FORMAT="${FORMAT:-pycodegpt}"
name="$(basename "$(cd "$HF_DIR" && pwd)")"
RUN_DIR="${RUN_DIR:-$RUNS/from_hf_${name}_${OBJECTIVE}_${SEPARATION}}"
mkdir -p "$RUN_DIR/data" "$RUN_DIR/eval"

stage() {  # stage NAME DONE_PATH COMMAND...: run COMMAND unless DONE_PATH exists
  local what="$1" done_path="$2"; shift 2
  if [ -e "$done_path" ]; then echo "== $what: done already ($done_path)"; return; fi
  echo "== $what"
  "$@"
}

imported="$RUN_DIR/imported"
stage "import $HF_DIR" "$imported/latest_checkpointed_iteration.txt" \
  "$PYTHON" "$REPO/tools/convert_checkpoint.py" --from-hf --load "$HF_DIR" --output "$imported" \
  --format "$FORMAT" --objective "$OBJECTIVE" --tensor-model-parallel-size "${TP:-1}" \
  --pipeline-model-parallel-size "${PP:-1}" --verify --verify-json "$RUN_DIR/import_verify.json"

# shellcheck disable=SC2086
stage "extract functions" "$RUN_DIR/data/functions.jsonl" \
  "$PYTHON" "$REPO/tools/extract_functions.py" ${CORPUS:-} --output "$RUN_DIR/data/functions.jsonl" \
  --report "$RUN_DIR/data/extract_report.json"
data="$RUN_DIR/data/${FORMAT}_text_code"
context="$("$PYTHON" -c 'import sys; from megatron_t2c.training.checkpointing import read_run_info
print(read_run_info(sys.argv[1])["architecture"]["seq_length"])' "$imported")"
stage "preprocess with $HF_DIR's tokenizer" "$data.idx" \
  "$PYTHON" "$REPO/tools/preprocess_data.py" --input "$RUN_DIR/data/functions.jsonl" --tokenizer-model "$HF_DIR" \
  --output-prefix "$data" --format "$FORMAT" --include text-code --max-seq-length "${SEQ_LENGTH:-$context}" \
  --summary "$data.summary.json"

if [ -n "${TRAIN_ITERS:-}" ]; then budget=(--train-iters "$TRAIN_ITERS"); else budget=(--epochs "${EPOCHS:-5}"); fi
seq_args=(); [ -n "${SEQ_LENGTH:-}" ] && seq_args=(--seq-length "$SEQ_LENGTH")
# shellcheck disable=SC2086
if [ ! -e "$RUN_DIR/mrpt.done" ]; then  # an interrupted run resumes from its last checkpoint
  launch "$RUN_DIR" --stage mrpt --format "$FORMAT" --objective "$OBJECTIVE" --separation "$SEPARATION" \
    --init-from "$imported" --data-path "$data" "${budget[@]}" "${seq_args[@]}" \
    --global-batch-size "${GLOBAL_BATCH:-1024}" --micro-batch-size "${MICRO_BATCH:-16}" \
    --tensor-model-parallel-size "${TP:-1}" --pipeline-model-parallel-size "${PP:-1}" \
    --save-interval "${SAVE_INTERVAL:-500}" --keep-checkpoints 2 --log-interval 10
  [ "${DRY_RUN:-0}" = "1" ] || touch "$RUN_DIR/mrpt.done"
fi
[ "${DRY_RUN:-0}" = "1" ] && exit 0

cpu_flag=(); [ "$CPU" = "1" ] && cpu_flag=(--cpu)
limit=(); [ -n "${LIMIT:-}" ] && limit=(--limit "$LIMIT")
sampling=(--greedy); [ "${N_SAMPLES:-1}" != "1" ] && sampling=(--no-greedy --temperature 0.8 --top-p 0.95)
for task in humaneval mbpp; do
  samples="$RUN_DIR/eval/$task.samples.jsonl"
  if [ "$task" = mbpp ] && ! "$PYTHON" -c "from megatron_t2c.evaluation.tasks.mbpp import resolve_mbpp_path; resolve_mbpp_path(None)" 2>/dev/null; then
    echo "== $task: skipped (mbpp.jsonl not found; see docs/evaluation.md)"; continue
  fi
  stage "generate $task" "$RUN_DIR/eval/$task.generated" bash -c '"$@" && touch "'"$RUN_DIR/eval/$task.generated"'"' _ \
    "$PYTHON" -m megatron_t2c evaluate generate --task "$task" --checkpoint "$RUN_DIR/checkpoints" \
    --output "$samples" --format "$FORMAT" --n-samples "${N_SAMPLES:-1}" --max-new-tokens "${MAX_NEW_TOKENS:-300}" \
    "${sampling[@]}" "${cpu_flag[@]}" "${limit[@]}"
  stage "execute $task" "$RUN_DIR/eval/$task.summary.json" \
    "$PYTHON" -m megatron_t2c evaluate execute --task "$task" --samples "$samples" \
    --output "$RUN_DIR/eval/$task.results.jsonl" --summary "$RUN_DIR/eval/$task.summary.json"
done

stage "export" "$RUN_DIR/hf/config.json" \
  "$PYTHON" "$REPO/tools/convert_checkpoint.py" --to-hf --load "$RUN_DIR/checkpoints" --output "$RUN_DIR/hf" \
  --eval-dir "$RUN_DIR/eval" --verify --verify-json "$RUN_DIR/export_verify.json"
echo "== done: $RUN_DIR (import_verify.json, eval/*.summary.json, hf/, export_verify.json)"
