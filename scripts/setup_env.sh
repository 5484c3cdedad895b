#!/usr/bin/env bash
# Create .venv in the repo root if missing and install megatron_t2c into it (idempotent, quick when done).
#
# torch: setup.py asks for a range (torch>=2.6), so pip keeps a torch that is already there.
#  - A base Python whose torch is a CUDA build (a GPU machine's, an NGC container's): the venv is made with
#    --system-site-packages, so that it sees that torch and pip never replaces it.
#  - Otherwise (CI, developers' CPU machines) torch==2.13.0 is installed first, before the package: pip
#    takes the CPU wheel on disk instead of a multi-GB CUDA build.  T2C_CPU_TORCH overrides that pin.
# PYTHON picks the base interpreter (default: python3 when its torch has CUDA, else python3.11, python3.12,
# python3); Python 3.11 and 3.12 are supported.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
cpu_torch="${T2C_CPU_TORCH:-torch==2.13.0}"

has_cuda_torch() {  # the interpreter $1 imports a torch built with CUDA (a GPU need not be present)
  "$1" -c 'import sys, torch; sys.exit(0 if torch.version.cuda else 1)' >/dev/null 2>&1
}

python="${PYTHON:-}"
if [ -z "$python" ]; then
  if command -v python3 >/dev/null 2>&1 && has_cuda_torch python3; then
    python=python3
  else
    for candidate in python3.11 python3.12 python3; do
      if command -v "$candidate" >/dev/null 2>&1; then python="$candidate"; break; fi
    done
  fi
fi
if [ ! -x .venv/bin/python ]; then
  if has_cuda_torch "$python"; then
    echo "[setup] creating .venv with $("$python" --version 2>&1), seeing its CUDA torch" \
         "$("$python" -c 'import torch; print(torch.__version__)')" >&2
    "$python" -m venv --system-site-packages .venv
  else
    echo "[setup] creating .venv with $("$python" --version 2>&1)" >&2
    "$python" -m venv .venv
  fi
fi
stamp=.venv/.megatron_t2c-installed
want="$(cat setup.py scripts/setup_env.sh | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing megatron_t2c and its dependencies into .venv" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  if ! .venv/bin/python -c 'import torch' >/dev/null 2>&1; then
    echo "[setup] no torch yet: installing $cpu_torch first" >&2
    .venv/bin/python -m pip install --quiet "$cpu_torch"
  fi
  .venv/bin/python -m pip install --quiet -e ".[test,hf,report,mpi,wandb]"
  echo "$want" > "$stamp"
fi
