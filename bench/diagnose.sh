#!/usr/bin/env bash
# One device call on a single H200 (24 GiB cap): where the README training command's time and memory go.
#   device tool, kind nvidia-h200, carry [.gpu, .benchdata]:   bash bench/diagnose.sh
# 1. the README training command with evaluation and checkpoints off (what the old loop-only harness timed);
# 2. the README training command as the README runs it (evaluation + checkpoint every 12 steps), with
#    per-step times and per-phase memory peaks in training_summary.json;
# 3. the README inference command with the adapter of 2 (per-batch times in report.json);
# 4. the reference recipe's training (and a short 48-token generation) in the same call.
set -uo pipefail
CALL=diagnose; WATCHDOG_S=${WATCHDOG_S:-570}
source bench/call.sh   # $OUT, the watchdog, lap, finish_call
source bench/gpu_env.sh
lap "model ready"
export MCQ_BENCH_CAP_GB=24
TRAIN=(python3 train_sft.py --config configs/qwen2.5-14b-4090.yaml --model_name_or_path /tmp/q14b
       --train_file .benchdata/train.csv)
"${TRAIN[@]}" --max_steps 12 --eval_strategy no --save_strategy no --load_best_model_at_end false \
  --early_stopping_patience 0 --output_dir /tmp/d_noeval > "$OUT/train_noeval.log" 2>&1
cp /tmp/d_noeval/training_summary.json "$OUT/train_noeval.json"
lap "no-eval training done"
"${TRAIN[@]}" --max_steps 24 --eval_steps 12 --save_steps 12 --output_dir /tmp/d_readme > "$OUT/train_readme.log" 2>&1
cp /tmp/d_readme/training_summary.json "$OUT/train_readme.json"
lap "README training done"
python3 infer.py --config configs/infer-14b-4090.yaml --model_path /tmp/d_readme/adapter \
  --test_file .benchdata/test.csv --output_file /tmp/d_sub.csv --resume false > "$OUT/infer.log" 2>&1
cp /tmp/d_sub_run/report.json "$OUT/infer.json"
lap "inference done"
python3 bench/bench_14b.py reference --model /tmp/q14b --data .benchdata/train.csv --json "$OUT/reference.json" \
  --n-ref-train 256 --n-ref-generate 16 > "$OUT/reference.log" 2>&1
lap "reference done"
finish_call
