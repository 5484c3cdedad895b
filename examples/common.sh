# Shared by the training launchers (sourced, not run). Everything is configured by environment variables:
#
#   NNODES (1 or $SLURM_NNODES)      nodes taking part          NODE_RANK (0 or $SLURM_NODEID)  this node
#   GPUS_PER_NODE (GPUs seen, or 1)  processes per node         MASTER_ADDR (127.0.0.1), MASTER_PORT (29500)
#   CPU=1                            gloo on the CPU, no CUDA (development; also what the tests run)
#   DATA_DIR (runs/quickstart/data)  datasets made by tools/preprocess_data.py: {pangu,pycodegpt}_{all,text_code}
#   TOKENIZER ($DATA_DIR/tokenizer.model)
#   RUNS (runs)                      where run directories go
#   EXTRA_ARGS                       more pretrain_t2c.py flags, appended last (they win), e.g. "--train-iters 10"
#   PYTHON (.venv/bin/python)
#   DRY_RUN=1                        print the command instead of running it (see what a launcher runs)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
NNODES="${NNODES:-${SLURM_NNODES:-1}}"
NODE_RANK="${NODE_RANK:-${SLURM_NODEID:-0}}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
CPU="${CPU:-0}"
if [ -z "${GPUS_PER_NODE:-}" ]; then
  if [ "$CPU" = "1" ] || ! command -v nvidia-smi >/dev/null 2>&1; then GPUS_PER_NODE=1
  else GPUS_PER_NODE="$(nvidia-smi -L | wc -l)"; fi
fi
DATA_DIR="${DATA_DIR:-$REPO/runs/quickstart/data}"
TOKENIZER="${TOKENIZER:-$DATA_DIR/tokenizer.model}"
RUNS="${RUNS:-$REPO/runs}"
EXTRA_ARGS="${EXTRA_ARGS:-}"

# The precision and device flags: bf16 on GPUs, fp32 on the CPU.
device_args() {
  if [ "$CPU" = "1" ]; then echo "--cpu --precision fp32"; else echo "--precision bf16"; fi
}

# The sample format that goes with a model preset (PanGu-Coder models: pangu; PyCodeGPT: pycodegpt).
format_of() {
  case "$1" in pycodegpt-*) echo pycodegpt ;; *) echo pangu ;; esac
}

# launch RUN_DIR FLAGS...: torchrun pretrain_t2c.py with FLAGS, logs and TensorBoard under RUN_DIR.
launch() {
  local run_dir="$1"; shift
  if [ "${DRY_RUN:-0}" = "1" ]; then
    # shellcheck disable=SC2046,SC2086
    echo "torchrun $REPO/pretrain_t2c.py" "$@" $(device_args) --save "$run_dir/checkpoints" \
      --load "$run_dir/checkpoints" $EXTRA_ARGS
    return 0
  fi
  mkdir -p "$run_dir"
  echo "[launch] $NNODES node(s) x $GPUS_PER_NODE process(es), node $NODE_RANK, run dir $run_dir" >&2
  # shellcheck disable=SC2046,SC2086
  "$PYTHON" -m torch.distributed.run --nnodes "$NNODES" --node-rank "$NODE_RANK" \
      --nproc-per-node "$GPUS_PER_NODE" --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" \
      "$REPO/pretrain_t2c.py" "$@" $(device_args) \
      --save "$run_dir/checkpoints" --load "$run_dir/checkpoints" \
      --tensorboard-dir "$run_dir/tensorboard" --log-jsonl "$run_dir/log.jsonl" \
      --data-cache-path "$run_dir/index_cache" $EXTRA_ARGS
}
