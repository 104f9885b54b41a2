#!/usr/bin/env bash
# One device call on a single H200, every process capped at 24 GiB: the README commands and the reference
# recipe in the same call, one after the other (nothing else on the GPU).
#   device tool, kind nvidia-h200, carry [.gpu, .benchdata]:   bash bench/readme_1gpu.sh
# 1. train_sft.py --config configs/qwen2.5-14b-4090.yaml (24 steps, evaluation + checkpoint every 12);
# 2. infer.py --config configs/infer-14b-4090.yaml with that adapter on the 1,839-question test file;
# 3. the reference recipe (bench_14b.py reference: training, 48-token generation);
# 4. if time is left: the training command with --train_sampling_strategy group_by_length.
set -uo pipefail
CALL=readme1; WATCHDOG_S=${WATCHDOG_S:-570}
source bench/call.sh   # $OUT, the watchdog, lap, finish_call
source bench/gpu_env.sh
lap "model ready"
export MCQ_BENCH_CAP_GB=24
TRAIN=(python3 train_sft.py --config configs/qwen2.5-14b-4090.yaml --model_name_or_path /tmp/q14b
       --train_file .benchdata/train.csv --max_steps 24 --eval_steps 12 --save_steps 12)
"${TRAIN[@]}" --output_dir /tmp/r1 > "$OUT/train.log" 2>&1
cp /tmp/r1/training_summary.json "$OUT/train.json"
lap "README training"
python3 infer.py --config configs/infer-14b-4090.yaml --model_path /tmp/r1/adapter --test_file .benchdata/test.csv \
  --output_file /tmp/r1_sub.csv --resume false > "$OUT/infer.log" 2>&1
cp /tmp/r1_sub_run/report.json "$OUT/infer.json"
lap "README inference"
python3 bench/bench_14b.py reference --model /tmp/q14b --data .benchdata/train.csv --json "$OUT/reference.json" \
  --n-ref-train 256 --n-ref-generate 16 > "$OUT/reference.log" 2>&1
lap "reference"
if [ $(( $(date +%s) - STARTED )) -lt ${GROUPED_IF_BEFORE_S:-400} ]; then
  "${TRAIN[@]}" --output_dir /tmp/r1g --train_sampling_strategy group_by_length > "$OUT/train_grouped.log" 2>&1
  cp /tmp/r1g/training_summary.json "$OUT/train_grouped.json"
  lap "grouped training"
fi
finish_call
