#!/usr/bin/env bash
# One device call on a single H200, every process capped at 24 GiB: the README training command with the
# three batch orders of transformers' Trainer, one after the other, 52 steps each (evaluation + checkpoint at
# 26 and 52, loss logged every 2 steps). 52 steps: group_by_length sorts mega-batches of 50 optimiser steps,
# so steps 3-52 (the steady ones) hold one mega-batch's mix of lengths.
# All three take ~11 minutes on a fresh machine (the first call ran out of time in its third run): pass fewer,
# e.g. ORDERS="random group_by_length".
#   device tool, kind nvidia-h200, carry [.gpu, .benchdata]:   bash bench/sampling.sh
set -uo pipefail
CALL=sampling; WATCHDOG_S=${WATCHDOG_S:-575}
source bench/call.sh   # $OUT, the watchdog, lap, finish_call
source bench/gpu_env.sh
lap "model ready"
export MCQ_BENCH_CAP_GB=24
TRAIN=(python3 train_sft.py --config configs/qwen2.5-14b-4090.yaml --model_name_or_path /tmp/q14b
       --train_file .benchdata/train.csv --max_steps 52 --eval_steps 26 --save_steps 26 --logging_steps 2)
for order in ${ORDERS:-random batch_rebalance group_by_length}; do
  "${TRAIN[@]}" --output_dir /tmp/s_$order --train_sampling_strategy $order > "$OUT/train_$order.log" 2>&1
  cp /tmp/s_$order/training_summary.json "$OUT/train_$order.json"
  lap "$order"
done
finish_call
