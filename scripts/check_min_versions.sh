#!/usr/bin/env bash
# Install every dependency of setup.py at its LOWER bound (">=X" -> "==X") into .venv-min, then run the tests
# that exercise those dependencies.  A bound that the code does not really support fails here, not on a
# user's machine.  torch is the exception: its lower bound (2.6, megatron-core's) has no CPU wheel on disk
# here, so .venv-min gets the CPU pin of scripts/setup_env.sh like every CPU machine.
# Usage: bash scripts/check_min_versions.sh [pytest args]   (default: the dependency-facing test files)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
venv=.venv-min
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "${T2C_CPU_TORCH:-torch==2.13.0}"
mapfile -t pins < <("$venv/bin/python" - <<'PY'
import ast, re
tree = ast.parse(open("setup.py").read())
values = {}
for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
        values[node.targets[0].id] = node.value
reqs = [ast.literal_eval(e) for e in values["CORE"].elts]
for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup"):
    for kw in call.keywords:
        if kw.arg == "extras_require":
            extras = ast.literal_eval(kw.value)
            for name in ("test", "hf", "report", "wandb"):
                reqs += extras.get(name, [])
for req in reqs:
    name = re.split(r"[<>=!~ \[]", req, 1)[0]
    if name == "torch":
        continue
    low = re.search(r">=\s*([\w.]+)", req)
    print(f"{name}=={low.group(1)}" if low else req)
PY
)
echo "[min-versions] ${pins[*]}" >&2
"$venv/bin/python" -m pip install --quiet "${pins[@]}"
"$venv/bin/python" -m pip install --quiet --no-deps -e .
"$venv/bin/python" -m pip check || true
if [ "$#" -eq 0 ]; then
  set -- -q -x tests/data/test_extraction.py tests/tokenizer tests/mrpt tests/hf tests/analysis/test_code_loss.py \
         tests/evaluation/test_tasks.py tests/training/test_recipes.py
fi
exec "$venv/bin/python" -m pytest "$@"
