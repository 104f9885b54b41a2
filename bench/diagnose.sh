#!/usr/bin/env bash
# One device call on a single H200 (24 GiB cap): where the README training command's time and memory go.
#   device tool, kind nvidia-h200, carry [.gpu, .benchdata]:   bash bench/diagnose.sh
# 1. the README training command with evaluation and checkpoints off (what the old loop-only harness timed);
# 2. the README training command as the README runs it (evaluation + checkpoint every 12 steps), with
#    per-step times and per-phase memory peaks in training_summary.json;
# 3. the README inference command with the adapter of 2 (per-batch times in report.json);
# 4. the reference recipe's training (and a short 48-token generation) in the same call.
set -uo pipefail
FINAL=${OUT:-/tmp/out}; OUT=$FINAL/diagnose; mkdir -p "$OUT"
# the device tool stops a command at its time limit: archive whatever exists by then. The call lasts until
# every process holding its output ends, so the watchdog is stopped at the end (or the call waits for it).
( sleep ${WATCHDOG_S:-570} && tar czf "$FINAL/partial.tgz" -C "$FINAL" diagnose 2>/dev/null ) & WATCHDOG=$!
STARTED=$(date +%s)
source bench/gpu_env.sh
echo "model ready after $(( $(date +%s) - STARTED )) s" > "$OUT/times.txt"
export MCQ_BENCH_CAP_GB=24
TRAIN=(python3 train_sft.py --config configs/qwen2.5-14b-4090.yaml --model_name_or_path /tmp/q14b
       --train_file .benchdata/train.csv)
"${TRAIN[@]}" --max_steps 12 --eval_strategy no --save_strategy no --load_best_model_at_end false \
  --early_stopping_patience 0 --output_dir /tmp/d_noeval > "$OUT/train_noeval.log" 2>&1
cp /tmp/d_noeval/training_summary.json "$OUT/train_noeval.json"
echo "no-eval training done after $(( $(date +%s) - STARTED )) s" >> "$OUT/times.txt"
"${TRAIN[@]}" --max_steps 24 --eval_steps 12 --save_steps 12 --output_dir /tmp/d_readme > "$OUT/train_readme.log" 2>&1
cp /tmp/d_readme/training_summary.json "$OUT/train_readme.json"
echo "README training done after $(( $(date +%s) - STARTED )) s" >> "$OUT/times.txt"
python3 infer.py --config configs/infer-14b-4090.yaml --model_path /tmp/d_readme/adapter \
  --test_file .benchdata/test.csv --output_file /tmp/d_sub.csv --resume false > "$OUT/infer.log" 2>&1
cp /tmp/d_sub_run/report.json "$OUT/infer.json"
echo "inference done after $(( $(date +%s) - STARTED )) s" >> "$OUT/times.txt"
python3 bench/bench_14b.py reference --model /tmp/q14b --data .benchdata/train.csv --json "$OUT/reference.json" \
  --n-ref-train 256 --n-ref-generate 16 > "$OUT/reference.log" 2>&1
echo "reference done after $(( $(date +%s) - STARTED )) s" >> "$OUT/times.txt"
tar czf "$FINAL/diagnose.tgz" -C "$FINAL" diagnose && rm -rf "$OUT"
pkill -P $WATCHDOG 2>/dev/null; kill $WATCHDOG 2>/dev/null
echo "=== done $(date +%T)"
