#!/usr/bin/env bash
# Every MRPT variant of the paper's Table 2 for one model, one after the other:
#
#   bash examples/mrpt_grid.sh [MODEL]
#
# OBJECTIVES (text-code code corrupt-code prefix-code) x SEPARATIONS (none partial full) by default;
# set either variable to a subset. Inputs and outputs as for examples/mrpt.sh (one run directory each).
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
MODEL="${1:-pangu-100m}"
for objective in ${OBJECTIVES:-text-code code corrupt-code prefix-code}; do
  for separation in ${SEPARATIONS:-none partial full}; do
    echo "[mrpt_grid] $MODEL: objective $objective, separation $separation" >&2
    bash "$here/mrpt.sh" "$objective" "$separation" "$MODEL"
  done
done
