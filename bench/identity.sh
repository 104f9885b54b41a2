#!/usr/bin/env bash
# One device call (4-GPU machine): the same submission from 1 GPU, 2 GPUs (torchrun) and 2 "nodes" (two torchrun
# launches, --nnodes 2, each in its own folder), answering with the 14B-shape base model; then the README training
# command alone on GPU 0 while the reference recipe runs on GPU 3 (as the earlier `pair` runs did).
#   device tool, kind nvidia-h200-x4, carry [.gpu, .benchdata]:   bash bench/identity.sh
set -uo pipefail
CALL=identity; WATCHDOG_S=${WATCHDOG_S:-380}
source bench/call.sh   # $OUT, the watchdog, lap, finish_call
source bench/gpu_env.sh
export MCQ_BENCH_CAP_GB=24
CUDA_VISIBLE_DEVICES=3 python3 bench/bench_14b.py reference --model /tmp/q14b --data .benchdata/train.csv \
  --json "$OUT/reference.json" --n-ref-train 256 --n-ref-generate 64 > "$OUT/reference.log" 2>&1 & REF=$!
INFER=(infer.py --config configs/infer-14b-4090.yaml --model_path /tmp/q14b --test_file .benchdata/test.csv --resume false)
CUDA_VISIBLE_DEVICES=2 python3 "${INFER[@]}" --output_file /tmp/one.csv > "$OUT/infer_1gpu.log" 2>&1 & ONE=$!
CUDA_VISIBLE_DEVICES=0,1 torchrun --standalone --nproc_per_node 2 "${INFER[@]}" --output_file /tmp/two.csv > "$OUT/infer_2gpu.log" 2>&1
wait $ONE
pids=()
for rank in 0 1; do
  mkdir -p /tmp/node$rank
  CUDA_VISIBLE_DEVICES=$rank torchrun --nnodes 2 --node_rank $rank --nproc_per_node 1 --rdzv_backend c10d \
    --rdzv_endpoint 127.0.0.1:29561 --rdzv_id mcq-identity "${INFER[@]}" --output_file /tmp/node$rank/sub.csv \
    > "$OUT/infer_2node_r$rank.log" 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"
{ cmp /tmp/one.csv /tmp/two.csv && echo "two_gpu_submission_identical true"
  cmp /tmp/one.csv /tmp/node0/sub.csv && echo "two_node_submission_identical true"
  echo "node1 holds: $(ls /tmp/node1 | tr '\n' ' ')"; } 2>&1 | tee "$OUT/identical.txt"
for f in one_run two_run node0/sub_run; do cp /tmp/$f/report.json "$OUT/report_${f%%/*}.json" 2>/dev/null; done
CUDA_VISIBLE_DEVICES=0 python3 train_sft.py --config configs/qwen2.5-14b-4090.yaml --model_name_or_path /tmp/q14b \
  --train_file .benchdata/train.csv --max_steps 24 --eval_steps 12 --save_steps 12 --output_dir /tmp/alone \
  > "$OUT/train_alone.log" 2>&1
cp /tmp/alone/training_summary.json "$OUT/train_alone.json"
wait $REF
finish_call
