#!/usr/bin/env bash
# Set up and run the test suite on a fresh machine (no GPU, no model download needed):
#   bash scripts/test.sh            # extra arguments go to pytest, e.g. -k parser
# Installs requirements.txt, requirements-dev.txt and requirements-export.txt (the GGUF / lm-eval export tests
# need llama-cpp-python, which pip builds from source the first time: about 8-12 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
"$PY" -m pip install -q -r requirements.txt -r requirements-dev.txt -r requirements-export.txt
export HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false
"$PY" -m pytest -q -p no:cacheprovider "$@"
