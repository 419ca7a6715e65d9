#!/usr/bin/env bash
# Create .venv and install m3kit with every extra, on a fresh machine.
#   M3KIT_TORCH   torch requirement to install first (default: the CPU build torch==2.13.0;
#                 GPU users: install their CUDA torch first and set M3KIT_TORCH=skip).
#   M3KIT_EXTRAS  extras to install (default: dev = all + test tools).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH=${M3KIT_TORCH:-torch==2.13.0}
EXTRAS=${M3KIT_EXTRAS:-dev}

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
if [ "$TORCH" != "skip" ]; then
  # torch first, from its own requirement, so pip never swaps in a multi-GB CUDA build.
  python -m pip install --quiet "$TORCH"
fi
# .ci/constraints.txt only saves pip a slow backtrack on registries that lag certifi; it
# pins nothing a user must keep.
python -m pip install --quiet -c .ci/constraints.txt -e ".[${EXTRAS}]"
python -c "import m3kit, torch; print('m3kit', m3kit.__version__, 'torch', torch.__version__)"
