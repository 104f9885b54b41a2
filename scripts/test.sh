#!/usr/bin/env bash
# Set up and run the test suite on a fresh machine (no GPU, no model download needed):
#   bash scripts/test.sh                 # the whole suite; extra arguments go to pytest, e.g. -k parser
#   bash scripts/test.sh -m "not slow"   # the fast lane
# Installs requirements.txt and requirements-dev.txt, the package itself (editable: the `mcq-tune` command), and
# the export tools (scripts/install-export.sh: llama-cpp-python is built from source the first time, 8-12 minutes
# on 2 cores). The tests run in two worker processes (pytest-xdist), one per core on a 2-core machine, an idle worker
# taking queued tests from a busy one (--dist worksteal: the long end-to-end tests do not leave one worker alone).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q -r requirements.txt -r requirements-dev.txt
"$PY" -m pip install -q --no-deps -e .
bash scripts/install-export.sh
export HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false
"$PY" -m pytest -q -n "${TEST_WORKERS:-2}" --dist worksteal "$@"
