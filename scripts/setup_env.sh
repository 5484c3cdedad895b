#!/usr/bin/env bash
# Create .venv in the repo root if missing and install megatron_t2c into it (idempotent, quick when done).
# torch is pinned to 2.13.0 exactly: pip takes the CPU wheel on disk instead of a multi-GB CUDA build.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $("$python" --version 2>&1)" >&2
  "$python" -m venv .venv
fi
stamp=.venv/.megatron_t2c-installed
want="$(cat setup.py | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing megatron_t2c and its dependencies into .venv" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[test,hf,report,mpi,wandb]"
  echo "$want" > "$stamp"
fi
