#!/usr/bin/env bash
# The whole pipeline on a CPU in a few minutes, no GPU and no download: a tiny random Qwen2 with the real
# Qwen2.5 tokenizer is trained on the project's sample questions, then answers the held-out ones.
#   bash scripts/demo.sh            # outputs in outputs/demo/ and outputs/demo_submission.csv
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q -r requirements.txt
export HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false
"$PY" demo.py "$@"
