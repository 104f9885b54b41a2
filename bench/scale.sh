#!/usr/bin/env bash
# Scale-out with the README's own commands at the 14B shape, every process capped at 24 GiB (one device call
# on a 4-GPU machine, bench/gpu_env.sh builds /tmp/q14b and unpacks the site bundle):
#   1. torchrun --nproc_per_node 4: train_sft.py (effective batch 32 kept) and infer.py on the CMMLU test file;
#   2. two "nodes" on GPUs 0 and 1: two torchrun launches with --nnodes 2 --node_rank 0|1, c10d rendezvous on
#      127.0.0.1, each node in its own folder (no shared filesystem): training and inference;
#   3. one GPU (GPU 2, beside step 2), the same commands: the 1-GPU figures of the same run; the reference
#      recipe on GPU 3 at the same time.
# usage (device tool, kind nvidia-h200-x4, carry [.gpu, .benchdata]):  bash bench/scale.sh
set -uo pipefail
CALL=scale; WATCHDOG_S=${WATCHDOG_S:-575}
source bench/call.sh   # $OUT, the watchdog, lap, finish_call
STEPS=${STEPS:-24}
source bench/gpu_env.sh
export MCQ_BENCH_CAP_GB=24   # every process capped like a 4090
TRAIN=(train_sft.py --config configs/qwen2.5-14b-4090.yaml --model_name_or_path /tmp/q14b
       --train_file .benchdata/train.csv --max_steps "$STEPS" --eval_steps 12 --save_steps 12)
INFER=(infer.py --config configs/infer-14b-4090.yaml --test_file .benchdata/test.csv --resume false)
lora_sum='import sys; from safetensors.torch import load_file; t = load_file(sys.argv[1]); print(f"{sum(float(v.double().sum()) for v in t.values()):.10f}")'

echo "=== 4 GPUs $(date +%T)"
torchrun --standalone --nproc_per_node 4 "${TRAIN[@]}" --output_dir /tmp/s4 > "$OUT/train_4gpu.log" 2>&1
cp /tmp/s4/training_summary.json "$OUT/train_4gpu.json"
torchrun --standalone --nproc_per_node 4 "${INFER[@]}" --model_path /tmp/s4/adapter --output_file /tmp/sub4.csv \
  > "$OUT/infer_4gpu.log" 2>&1
cp /tmp/sub4_run/report.json "$OUT/infer_4gpu.json"

echo "=== 2 nodes x 1 GPU (GPUs 0, 1) and 1 GPU (GPU 2) side by side $(date +%T)"
node() {  # node rank, GPU, command...
  local rank=$1 gpu=$2; shift 2
  mkdir -p /tmp/node$rank
  CUDA_VISIBLE_DEVICES=$gpu torchrun --nnodes 2 --node_rank "$rank" --nproc_per_node 1 --rdzv_backend c10d \
    --rdzv_endpoint 127.0.0.1:$PORT --rdzv_id "mcq-$PORT" "$@"
}
one_gpu() {
  CUDA_VISIBLE_DEVICES=2 python3 "${TRAIN[@]}" --output_dir /tmp/s1 > "$OUT/train_1gpu.log" 2>&1
  cp /tmp/s1/training_summary.json "$OUT/train_1gpu.json"
  for run in 1 2; do
    CUDA_VISIBLE_DEVICES=2 python3 "${INFER[@]}" --model_path /tmp/s4/adapter --output_file /tmp/sub1.csv > "$OUT/infer_1gpu_$run.log" 2>&1
    cp /tmp/sub1_run/report.json "$OUT/infer_1gpu_$run.json"
  done
}
one_gpu & ONE=$!
CUDA_VISIBLE_DEVICES=3 python3 bench/bench_14b.py reference --model /tmp/q14b --data .benchdata/train.csv \
  --json "$OUT/reference.json" --n-ref-train 256 --n-ref-generate 64 > "$OUT/reference.log" 2>&1 & REF=$!
PORT=29555 node 0 0 "${TRAIN[@]}" --output_dir /tmp/node0/run > "$OUT/train_2node_r0.log" 2>&1 &
T0=$!
PORT=29555 node 1 1 "${TRAIN[@]}" --output_dir /tmp/node1/run > "$OUT/train_2node_r1.log" 2>&1
wait $T0
cp /tmp/node0/run/training_summary.json "$OUT/train_2node.json"
for r in 0 1; do  # the checkpoints each node wrote itself: identical LoRA weights on both ranks?
  echo "node $r lora-sum $(python3 -c "$lora_sum" /tmp/node$r/run/checkpoint-$STEPS/adapter_model.safetensors 2>&1 | tail -1)"
done | tee "$OUT/two_node_weights.txt"
PORT=29556 node 0 0 "${INFER[@]}" --model_path /tmp/s4/adapter --output_file /tmp/node0/sub.csv > "$OUT/infer_2node_r0.log" 2>&1 &
N0=$!
PORT=29556 node 1 1 "${INFER[@]}" --model_path /tmp/s4/adapter --output_file /tmp/node1/sub.csv > "$OUT/infer_2node_r1.log" 2>&1
wait $N0 $ONE $REF
cp /tmp/node0/sub_run/report.json "$OUT/infer_2node.json"
cmp /tmp/sub1.csv /tmp/sub4.csv && echo "four_gpu_submission_identical true" | tee -a "$OUT/identical.txt"
cmp /tmp/sub1.csv /tmp/node0/sub.csv && echo "two_node_submission_identical true" | tee -a "$OUT/identical.txt"
ls /tmp/node1/ | tee -a "$OUT/identical.txt"   # node 1 keeps only its checkpoint folder, no submission
for f in "$OUT"/*.log; do echo "== $f"; grep -E "Error|error:|Traceback" "$f" | tail -3; done
finish_call
