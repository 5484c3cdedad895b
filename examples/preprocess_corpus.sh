#!/usr/bin/env bash
# Corpus-scale data pipeline: extract functions from a corpus far larger than memory, train the tokenizer
# on the records, and build the Megatron dataset — on N ranks, resumable, with the same bytes a single
# process would write.  Re-run the same command after an interruption: completed shards are kept.
#
#   LAUNCH=local  RANKS=2 bash examples/preprocess_corpus.sh RUN_DIR     # N processes on this node
#   LAUNCH=mpi    RANKS=16 bash examples/preprocess_corpus.sh RUN_DIR    # mpiexec -n N (pip install '.[mpi]')
#   LAUNCH=srun   bash examples/preprocess_corpus.sh RUN_DIR             # inside an allocation (see .sbatch)
#
# Environment: CORPUS="trees, files or 'patterns/**'" (default: the standard library), FILES_FROM (a file
# listing paths, one a line), RANKS (default 2), WORKERS per rank (default 1), VOCAB_SIZE (8000),
# FORMAT (pangu|pycodegpt), INCLUDE (text-code|code-only|all), MAX_SEQ_LENGTH (1024), SHARD_FILES (1000),
# SHARD_BYTES (268435456), MPIEXEC (default: the one in .venv, else mpiexec on PATH).
# RUN_DIR (and its *.shards directories) must be on a filesystem every rank sees.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
run_dir="$(mkdir -p "${1:-$repo/runs/corpus}" && cd "${1:-$repo/runs/corpus}" && pwd)"
py="${PYTHON:-$repo/.venv/bin/python}"
launch="${LAUNCH:-local}"
ranks="${RANKS:-2}"
workers="${WORKERS:-1}"
fmt="${FORMAT:-pangu}"
include="${INCLUDE:-text-code}"
data="$run_dir/data"
mkdir -p "$data"

case "$launch" in
  local) run=("$py"); rank_args=(--ranks "$ranks") ;;
  mpi)   mpiexec="${MPIEXEC:-$(command -v "$repo/.venv/bin/mpiexec" || command -v mpiexec)}"
         run=("$mpiexec" -n "$ranks" "$py"); rank_args=() ;;
  srun)  run=(srun --kill-on-bad-exit=1 "$py"); rank_args=() ;;  # srun takes -N/-n from the allocation
  *)     echo "LAUNCH must be local, mpi or srun" >&2; exit 2 ;;
esac

inputs=()
# shellcheck disable=SC2206
[ -n "${CORPUS:-}" ] && inputs=(${CORPUS})
[ -n "${FILES_FROM:-}" ] && inputs+=(--files-from "$FILES_FROM")

echo "== extract functions ($launch, $ranks rank(s))"
"${run[@]}" "$repo/tools/extract_functions.py" "${inputs[@]}" "${rank_args[@]}" --workers "$workers" \
  --output "$data/functions.jsonl" --report "$data/extract_report.json" \
  --rejected-list "$data/rejected_files.tsv" --shard-files "${SHARD_FILES:-1000}" --resume --no-progress

if [ ! -e "$data/tokenizer.model" ]; then
  echo "== train tokenizer (one process)"
  "$py" "$repo/tools/train_tokenizer.py" --input "$data/functions.jsonl" --output-prefix "$data/tokenizer" \
    --vocab-size "${VOCAB_SIZE:-8000}" --summary "$data/tokenizer.summary.json"
fi

prefix="$data/${fmt}_${include//-/_}"
echo "== preprocess $fmt/$include ($launch, $ranks rank(s))"
"${run[@]}" "$repo/tools/preprocess_data.py" --input "$data/functions.jsonl" "${rank_args[@]}" \
  --tokenizer-model "$data/tokenizer.model" --output-prefix "$prefix" --format "$fmt" --include "$include" \
  --max-seq-length "${MAX_SEQ_LENGTH:-1024}" --workers "$workers" --shard-bytes "${SHARD_BYTES:-268435456}" \
  --summary "$prefix.summary.json" --index-map "$prefix.index_map.txt" --resume --no-progress
echo "== done: $prefix.bin / $prefix.idx (manifests: $data/*.shards/manifest.json)"
