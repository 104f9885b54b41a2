#!/usr/bin/env bash
# One device call on a single H200, every process capped at 24 GiB: the README training command as the config
# stands (52 steps, evaluation + checkpoint at 26 and 52), then the reference recipe in the same call.
#   device tool, kind nvidia-h200, carry [.gpu, .benchdata]:   bash bench/readme_train.sh
set -uo pipefail
CALL=readme_train; WATCHDOG_S=${WATCHDOG_S:-420}
source bench/call.sh   # $OUT, the watchdog, lap, finish_call
source bench/gpu_env.sh
lap "model ready"
export MCQ_BENCH_CAP_GB=24
python3 train_sft.py --config configs/qwen2.5-14b-4090.yaml --model_name_or_path /tmp/q14b \
  --train_file .benchdata/train.csv --max_steps 52 --eval_steps 26 --save_steps 26 --logging_steps 2 \
  --output_dir /tmp/rt > "$OUT/train.log" 2>&1
cp /tmp/rt/training_summary.json "$OUT/train.json"
lap "README training"
python3 bench/bench_14b.py reference --model /tmp/q14b --data .benchdata/train.csv --json "$OUT/reference.json" \
  --n-ref-train ${N_REF_TRAIN:-128} --n-ref-generate ${N_REF_GENERATE:-8} > "$OUT/reference.log" 2>&1
lap "reference"
finish_call
