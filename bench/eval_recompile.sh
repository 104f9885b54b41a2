#!/usr/bin/env bash
# One device call on a single H200 (24 GiB cap): does the validation pass make training recompile?
#   device tool, kind nvidia-h200, carry [.gpu, .benchdata]:   bash bench/eval_recompile.sh
# 1. a short run of the README training command with the previous, compiled validation pass
#    (TORCH_LOGS=recompiles shows what recompiles and why);
# 2. the README training command as the README runs it (eager validation), 24 steps, evaluation and
#    checkpoint every 12 steps;
# 3. the README inference command with that adapter, then the same with torch.compile off (force_eager).
set -uo pipefail
CALL=recompile; WATCHDOG_S=${WATCHDOG_S:-570}
source bench/call.sh   # $OUT, the watchdog, lap, finish_call
source bench/gpu_env.sh
lap "model ready"
export MCQ_BENCH_CAP_GB=24
ARGS=(--config configs/qwen2.5-14b-4090.yaml --model_name_or_path /tmp/q14b --train_file .benchdata/train.csv)
COMPILED_EVAL='import sys, contextlib, train_sft; train_sft.select_backend("auto"); import mcq_trainer
mcq_trainer.eager_forward = contextlib.nullcontext
sys.exit(train_sft.run(sys.argv[1:]))'
TORCH_LOGS=recompiles python3 -c "$COMPILED_EVAL" "${ARGS[@]}" --max_steps 8 --eval_steps 4 --save_steps 4 \
  --val_fraction 0.05 --output_dir /tmp/t_compiled > "$OUT/train_compiled_eval.log" 2>&1
cp /tmp/t_compiled/training_summary.json "$OUT/train_compiled_eval.json"
lap "compiled-eval run"
TORCH_LOGS=recompiles python3 train_sft.py "${ARGS[@]}" --max_steps 24 --eval_steps 12 --save_steps 12 \
  --output_dir /tmp/t_readme > "$OUT/train_readme.log" 2>&1
cp /tmp/t_readme/training_summary.json "$OUT/train_readme.json"
lap "README training"
INFER=(--config configs/infer-14b-4090.yaml --model_path /tmp/t_readme/adapter --test_file .benchdata/test.csv --resume false)
python3 infer.py "${INFER[@]}" --output_file /tmp/i_compiled.csv > "$OUT/infer.log" 2>&1
cp /tmp/i_compiled_run/report.json "$OUT/infer.json"
lap "README inference"
EAGER='import sys, infer; infer.select_backend("auto"); import torch; torch.compiler.set_stance("force_eager")
sys.exit(infer.run(sys.argv[1:]))'
python3 -c "$EAGER" "${INFER[@]}" --output_file /tmp/i_eager.csv > "$OUT/infer_eager.log" 2>&1
cp /tmp/i_eager_run/report.json "$OUT/infer_eager.json"
cmp /tmp/i_compiled.csv /tmp/i_eager.csv > "$OUT/cmp.txt" 2>&1; echo "cmp rc $?" >> "$OUT/cmp.txt"
lap "eager inference"
finish_call
