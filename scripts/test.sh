#!/usr/bin/env bash
# Set up and run the test suite on a fresh machine (no GPU, no model download needed):
#   bash scripts/test.sh            # extra arguments go to pytest, e.g. -k parser
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q -r requirements.txt -r requirements-dev.txt
export HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false
"$PY" -m pytest -q -p no:cacheprovider "$@"
