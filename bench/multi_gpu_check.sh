#!/usr/bin/env bash
# Device-tool check on a 2-GPU machine (carry .gpu and .benchdata): DDP training keeps ranks in sync, and
# 2-process sharded inference writes the same submission as 1 process. usage: bash bench/multi_gpu_check.sh
set -uo pipefail
if [ ! -d /tmp/site/unsloth ]; then mkdir -p /tmp/site && tar xJf .gpu/gpu-site.tar.xz -C /tmp/site; fi
export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -m mcqtune tiny /tmp/tiny --tokenizer .benchdata/tokenizer 2>&1 | tail -1; python3 -m mcqtune sample /tmp/sample >/dev/null
for backend in ${BACKENDS:-unsloth hf}; do
  echo "== DDP training, backend $backend"
  torchrun --standalone --nproc_per_node=2 bench/ddp_checksum.py --config configs/demo-cpu.yaml --model_name_or_path /tmp/tiny \
    --train_file /tmp/sample/train.csv --output_dir /tmp/ddp_$backend --backend $backend --bf16 true --max_steps 10 \
    --gradient_accumulation_steps 2 --eval_steps 5 --save_steps 5 2>&1 | grep -E "RANK|processes|Error|error" | head -8
done
echo "== sharded inference"
B=${BACKENDS:-unsloth hf}; A=/tmp/ddp_${B%% *}/adapter
torchrun --standalone --nproc_per_node=1 infer.py --model_path $A --test_file /tmp/sample/test.csv --output_file /tmp/one.csv --batch_size 16 2>&1 | tail -1
torchrun --standalone --nproc_per_node=2 infer.py --model_path $A --test_file /tmp/sample/test.csv --output_file /tmp/two.csv --batch_size 16 2>&1 | grep -E '"rows"|rror' | head -3
cmp /tmp/one.csv /tmp/two.csv && echo "SAME SUBMISSION (1 vs 2 GPUs)"
