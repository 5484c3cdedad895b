#!/usr/bin/env bash
# The main job: set up .venv and run the pipeline on the embedded default corpus (this interpreter's
# standard library).  Stages: extract functions -> train the SentencePiece tokenizer -> Megatron indexed
# datasets in both formats (text-code pairs, and everything for MAPT) -> summary.
# Everything lands under RUN_DIR (default runs/quickstart); a stage whose outputs exist is skipped.
#
#   bash examples/quickstart.sh [RUN_DIR]
#
# Scale with environment variables: CORPUS="path ..." (Python trees instead of the standard library),
# VOCAB_SIZE (default 8000), WORKERS (default: all cores), MAX_SEQ_LENGTH (default 1024).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run_dir="$(mkdir -p "${1:-$repo/runs/quickstart}" && cd "${1:-$repo/runs/quickstart}" && pwd)"
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

"$py" "$repo/tools/data_summary.py" "$run_dir"
