#!/usr/bin/env bash
# The main job: set up .venv and run the paper's pipeline at tiny scale on the embedded default corpus (this
# interpreter's standard library): extract functions -> SentencePiece tokenizer -> Megatron indexed datasets
# in both formats -> summary -> MAPT -> MRPT (code objective x separation none/partial/full, and each other
# objective) -> zero-shot HumanEval and MBPP (greedy, sampled, incremental) -> Hugging Face export with
# --verify -> RUN_DIR/report.md. Everything lands under RUN_DIR (default runs/quickstart); a finished stage
# is skipped on a re-run and an interrupted one resumes.
#
#   bash examples/quickstart.sh [RUN_DIR] [PIPELINE FLAGS...]
#
# Data stages scale with environment variables: CORPUS="path ..." (Python trees instead of the standard
# library), VOCAB_SIZE (8000), WORKERS (all cores), MAX_SEQ_LENGTH (1024). The model, training, evaluation
# and GPU stages take tools/run_pipeline.py flags after RUN_DIR, e.g.
#   bash examples/quickstart.sh runs/big --model pangu-350m --num-layers 0 --hidden-size 0 \
#       --num-attention-heads 0 --seq-length 0 --mapt-iters 20000 --nproc-per-node 8 --no-cpu
# (python tools/run_pipeline.py --help lists them all).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run_dir="$(mkdir -p "${1:-$repo/runs/quickstart}" && cd "${1:-$repo/runs/quickstart}" && pwd)"
[ $# -gt 0 ] && shift
bash "$repo/scripts/setup_env.sh"
py="$repo/.venv/bin/python"
workers="${WORKERS:-$(nproc)}"
vocab="${VOCAB_SIZE:-8000}"
seq="${MAX_SEQ_LENGTH:-1024}"
data="$run_dir/data"
mkdir -p "$data"

stage() {  # stage NAME DONE_FILE COMMAND...: run COMMAND unless DONE_FILE exists
  local name="$1" done_file="$2"; shift 2
  if [ -e "$done_file" ]; then
    echo "== $name: done already ($done_file)"
    return
  fi
  echo "== $name"
  local t0=$SECONDS
  "$@"
  echo "== $name: $((SECONDS - t0)) s"
}

# shellcheck disable=SC2086
stage "extract functions" "$data/extract_report.json" \
  "$py" "$repo/tools/extract_functions.py" ${CORPUS:-} --output "$data/functions.jsonl" \
  --report "$data/extract_report.json" --rejected-list "$data/rejected_files.tsv" --workers "$workers"

stage "train tokenizer" "$data/tokenizer.model" \
  "$py" "$repo/tools/train_tokenizer.py" --input "$data/functions.jsonl" --output-prefix "$data/tokenizer" \
  --vocab-size "$vocab" --summary "$data/tokenizer.summary.json"

for fmt in pangu pycodegpt; do
  for include in text-code all; do
    prefix="$data/${fmt}_${include//-/_}"
    stage "preprocess $fmt/$include" "$prefix.idx" \
      "$py" "$repo/tools/preprocess_data.py" --input "$data/functions.jsonl" \
      --tokenizer-model "$data/tokenizer.model" --output-prefix "$prefix" --format "$fmt" \
      --include "$include" --max-seq-length "$seq" --workers "$workers" --summary "$prefix.summary.json" \
      --index-map "$prefix.index_map.txt"
  done
done

stage "summary" "$run_dir/summary.json" "$py" "$repo/tools/data_summary.py" "$run_dir"

# MAPT -> MRPT -> evaluation -> export -> report (each stage skipped when done)
"$py" "$repo/tools/run_pipeline.py" "$run_dir" "$@"
