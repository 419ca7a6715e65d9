#!/usr/bin/env bash
# Dependency drift check: install the NEWEST versions pyproject.toml allows into .venv-latest
# (nothing from .ci/requirements.lock) and run the whole suite, so a release that breaks m3kit
# is seen the day it is published. Prints what differs from the lock first.
#   bash scripts/test_latest.sh            # arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
export M3KIT_VENV=${M3KIT_VENV:-.venv-latest} M3KIT_CONSTRAINTS=latest
bash scripts/setup.sh
"$M3KIT_VENV/bin/python" scripts/lock_diff.py .ci/requirements.lock
bash scripts/test.sh "$@"
