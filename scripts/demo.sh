#!/usr/bin/env bash
# The whole pipeline on a CPU in a few minutes, no GPU and no download: a tiny random Qwen2 with the real
# Qwen2.5 tokenizer is trained on the project's sample questions, then answers the held-out ones.
#   bash scripts/demo.sh            # outputs in outputs/ (demo/, demo_submission.csv, demo_report/)
# Installs requirements.txt and the package (editable: afterwards `mcq-tune demo` does the same).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q -r requirements.txt
"$PY" -m pip install -q --no-deps -e .
export HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false
"$PY" -m mcqtune demo "$@"
