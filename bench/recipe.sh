#!/usr/bin/env bash
# The README's own GPU commands at the 14B shape, every process capped like the card it stands in for,
# four pipelines at once on a 4-GPU machine (one device-tool call), the reference recipe in the same run.
#   device tool, kind nvidia-h200-x4, carry [.gpu, .benchdata]:   bash bench/recipe.sh
#   then here: python bench/bench_14b.py summarize-recipe /work/.device/.../out   -> bench/results.json
# GPU 0: train_sft.py --config configs/qwen2.5-14b-4090.yaml (random batches), then infer.py --config
#        configs/infer-14b-4090.yaml on the 1,839-question CMMLU test file, twice.
# GPU 1: the reference recipe (bench_14b.py reference): its training and 48-token generation; then
#        export.py --format 4bit and infer.py on that pre-quantised base (start-up and host memory).
# GPU 2: the same training command with --train_sampling_strategy group_by_length, then with TRL's own loss.
# GPU 3: configs/qwen2.5-14b-16gb.yaml under a 15 GiB cap (fp16), then learning at 14B on the sample questions.
# Needs .gpu/gpu-site.tar.xz (../shared/gpu/pack-gpu-deps.sh) and .benchdata/{train,test}.csv + tokenizer/.
set -uo pipefail
CALL=recipe; WATCHDOG_S=${WATCHDOG_S:-575}
source bench/call.sh   # $OUT, the watchdog, lap, finish_call
STEPS=${STEPS:-24}
source bench/gpu_env.sh
python3 sample_data.py /tmp/sample --train 1600 --test 160 >/dev/null
TRAIN=(python3 train_sft.py --config configs/qwen2.5-14b-4090.yaml --model_name_or_path /tmp/q14b
       --train_file .benchdata/train.csv --max_steps "$STEPS" --eval_steps 12 --save_steps 12)
TRL_LOSS='import sys, train_sft; train_sft.select_backend("auto"); import mcq_trainer
from trl import SFTTrainer
mcq_trainer.MCQTrainer.compute_loss = SFTTrainer.compute_loss
sys.exit(train_sft.run(sys.argv[1:]))'
gpu0() {
  "${TRAIN[@]}" --output_dir /tmp/r_random > "$OUT/train_random.log" 2>&1
  cp /tmp/r_random/training_summary.json "$OUT/train_random.json"
  for run in 1 2; do
    python3 infer.py --config configs/infer-14b-4090.yaml --model_path /tmp/r_random/adapter \
      --test_file .benchdata/test.csv --output_file /tmp/sub_$run.csv --resume false > "$OUT/infer_$run.log" 2>&1
    cp /tmp/sub_${run}_run/report.json "$OUT/infer_$run.json"
  done
  cmp /tmp/sub_1.csv /tmp/sub_2.csv && echo "two infer runs: identical submissions" >> "$OUT/infer_1.log"
}
gpu1() {
  python3 bench/bench_14b.py reference --model /tmp/q14b --data .benchdata/train.csv --json "$OUT/reference.json" \
    --n-ref-train 256 --n-ref-generate 64 > "$OUT/reference.log" 2>&1
  python3 export.py --format 4bit --model /tmp/q14b --output_dir /tmp/q14b-nf4 > "$OUT/export_4bit.log" 2>&1
  while [ ! -f /tmp/r_random/adapter/adapter_model.safetensors ]; do sleep 5; done
  python3 infer.py --config configs/infer-14b-4090.yaml --model_path /tmp/r_random/adapter --base_model_id /tmp/q14b-nf4 \
    --test_file .benchdata/test.csv --output_file /tmp/sub_nf4.csv --resume false > "$OUT/infer_nf4.log" 2>&1
  cp /tmp/sub_nf4_run/report.json "$OUT/infer_nf4.json"
}
gpu2() {
  "${TRAIN[@]}" --output_dir /tmp/r_grouped --train_sampling_strategy group_by_length > "$OUT/train_grouped.log" 2>&1
  cp /tmp/r_grouped/training_summary.json "$OUT/train_grouped.json"
  python3 -c "$TRL_LOSS" "${TRAIN[@]:2}" --output_dir /tmp/r_trl > "$OUT/train_trl_loss.log" 2>&1
  cp /tmp/r_trl/training_summary.json "$OUT/train_trl_loss.json"
}
gpu3() {
  MCQ_BENCH_CAP_GB=15 python3 train_sft.py --config configs/qwen2.5-14b-16gb.yaml --model_name_or_path /tmp/q14b \
    --train_file .benchdata/train.csv --max_steps "$STEPS" --eval_steps 12 --save_steps 12 \
    --output_dir /tmp/r_16gb > "$OUT/train_16gb.log" 2>&1
  cp /tmp/r_16gb/training_summary.json "$OUT/train_16gb.json"
  "${TRAIN[@]:0:6}" --train_file /tmp/sample/train.csv --max_steps 30 --eval_steps 10 --save_steps 10 \
    --output_dir /tmp/r_learn > "$OUT/learn.log" 2>&1
  cp /tmp/r_learn/training_summary.json "$OUT/learn.json"
}
export MCQ_BENCH_CAP_GB=24
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -l 1 > "$OUT/nvidia_smi.csv" &
SMI=$!
pids=()
for gpu in 0 1 2 3; do CUDA_VISIBLE_DEVICES=$gpu "gpu$gpu" & pids+=($!); done
wait "${pids[@]}"
kill $SMI 2>/dev/null
for f in "$OUT"/*.log; do echo "== $f"; grep -E "Error|error:|Traceback" "$f" | tail -3; done
python3 bench/bench_14b.py summarize-recipe "$OUT" --out "$FINAL/results.json" | tail -40
finish_call
