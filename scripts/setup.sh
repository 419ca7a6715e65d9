#!/usr/bin/env bash
# Create a venv and install m3kit with every extra, on a fresh machine.
#   M3KIT_TORCH        torch requirement to install first (default: the CPU build torch==2.13.0;
#                      GPU users: install their CUDA torch first and set M3KIT_TORCH=skip).
#   M3KIT_EXTRAS       extras to install (default: dev = all + test tools).
#   M3KIT_VENV         the venv folder (default: .venv).
#   M3KIT_CONSTRAINTS  versions to install: "lock" (default) installs the tested versions in
#                      .ci/requirements.lock (what CI runs; regenerate with scripts/lock.sh);
#                      "latest" installs the newest versions pyproject.toml allows
#                      (scripts/test_latest.sh uses it to see dependency drift the day it happens).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH=${M3KIT_TORCH:-torch==2.13.0}
EXTRAS=${M3KIT_EXTRAS:-dev}
VENV=${M3KIT_VENV:-.venv}
MODE=${M3KIT_CONSTRAINTS:-lock}

case "$MODE" in
  lock) PINS=(-c .ci/requirements.lock) ;;
  # Only what this registry cannot serve (.ci/constraints.txt); everything else newest.
  latest) PINS=(-c .ci/constraints.txt --upgrade --upgrade-strategy eager) ;;
  *) echo "M3KIT_CONSTRAINTS must be 'lock' or 'latest', not '$MODE'" >&2; exit 2 ;;
esac

if [ ! -x "$VENV/bin/python" ]; then
  # A full disk shows up as pip's "Connection interrupted while downloading" (a cut wheel
  # that every resume fails to extend), so check the space first and say what is missing.
  NEED_KB=$((4 * 1024 * 1024))  # torch + every extra, unpacked, plus pip's temporary copies
  for dir in "$(dirname "$(readlink -f "$VENV")")" "${TMPDIR:-/tmp}"; do
    free_kb=$(df -Pk "$dir" | awk 'NR == 2 {print $4}')
    if [ "$free_kb" -lt "$NEED_KB" ]; then
      echo "setup.sh: only $((free_kb / 1024)) MiB free on the disk of $dir; installing needs 4 GiB" >&2
      exit 1
    fi
  done
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"

# pip install that survives a dropped connection: pip resumes a cut download
# (--resume-retries) and the whole install is tried again up to 3 times, saying so each time;
# a third failure stops the script with pip's own error.
pip_install() {
  local attempt
  for attempt in 1 2 3; do
    if python -m pip install --quiet --retries 10 --timeout 60 $RESUME "$@"; then
      return 0
    fi
    echo "setup.sh: pip install failed (attempt $attempt of 3): $*" >&2
    sleep $((attempt * 10))
  done
  echo "setup.sh: pip install failed 3 times; giving up" >&2
  return 1
}
RESUME=""
pip_install --upgrade pip
# --resume-retries exists from pip 25.1 on; the upgraded pip has it.
# (help captured first: grep -q closing the pipe early would fail the pipeline under pipefail).
PIP_HELP=$(python -m pip install --help)
if [[ "$PIP_HELP" == *--resume-retries* ]]; then
  RESUME="--resume-retries 20"
fi
if [ "$TORCH" != "skip" ]; then
  # torch first, from its own requirement, so pip never swaps in a multi-GB CUDA build.
  pip_install "$TORCH"
fi
# Whatever torch is installed now stays: an upgrade would swap in another (CUDA) build.
KEEP_TORCH=$(mktemp)
trap 'rm -f "$KEEP_TORCH"' EXIT
python -c "import torch; print('torch==' + torch.__version__)" > "$KEEP_TORCH" 2>/dev/null || true
pip_install "${PINS[@]}" -c "$KEEP_TORCH" -e ".[${EXTRAS}]"
python -c "import m3kit, torch, transformers; print('m3kit', m3kit.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
