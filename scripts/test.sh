#!/usr/bin/env bash
# Install everything (scripts/setup.sh) and run the whole test suite, offline.
# Same variables as scripts/setup.sh (M3KIT_VENV, M3KIT_CONSTRAINTS, ...); arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. "${M3KIT_VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ruff check .
ruff format --check .
mypy
python -m pytest "$@"
