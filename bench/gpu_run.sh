#!/usr/bin/env bash
# One device-tool call: unpack the Unsloth stack, check the tiny model end to end on the GPU, build the
# 14B-shape model, run the reference recipe. usage: bash bench/gpu_run.sh STAGE...   (stages: setup tiny build
# reference). Our own figures come from the README commands: bench/recipe.sh.
# Needs .gpu/gpu-site.tar.xz (../shared/gpu/pack-gpu-deps.sh) and .benchdata/train.csv (a copy of
# ../shared/data/cmmlu/train.csv), both carried; writes logs and JSON under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if [ ! -d /tmp/site/unsloth ]; then mkdir -p /tmp/site && tar xJf .gpu/gpu-site.tar.xz -C /tmp/site; fi
export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
quiet() { grep -v -E "W1128|it/s\]|examples/s\]|s/it\]|^\s*$" ; }
for stage in "$@"; do
  echo "=== $stage $(date +%T)"
  case $stage in
    setup)
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
      python3 -c "import unsloth, trl, transformers, peft, bitsandbytes, torch; print('unsloth', unsloth.__version__, 'trl', trl.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'bnb', bitsandbytes.__version__, 'torch', torch.__version__)" 2>&1 | tail -1 ;;
    tiny)
      python3 tiny_qwen.py /tmp/tiny --tokenizer .benchdata/tokenizer 2>&1 | tail -1; python3 sample_data.py /tmp/sample >/dev/null
      python3 train_sft.py --config configs/demo-cpu.yaml --model_name_or_path /tmp/tiny --train_file /tmp/sample/train.csv \
        --output_dir /tmp/demo --num_train_epochs 2 --bf16 true --export merged 2>&1 | tee "$OUT/tiny_train.log" | grep -E "eval_accuracy|train_runtime|error|Error" | tail -4
      python3 infer.py --model_path /tmp/demo/adapter --test_file /tmp/sample/test.csv --output_file /tmp/sub.csv 2>&1 | tail -1
      python3 infer.py --model_path /tmp/demo/adapter --test_file /tmp/sample/test.csv --output_file /tmp/sub_gen.csv --mode generate --max_new_tokens 8 2>&1 | tail -1
      python3 infer.py --model_path /tmp/demo/merged --test_file /tmp/sample/test.csv --output_file /tmp/sub_merged.csv 2>&1 | tail -1
      python3 bench/check_prefix.py --model_path /tmp/demo/adapter --test_file /tmp/sample/test.csv --ensemble /tmp/demo/adapter 2>&1 | tail -1
      ls /tmp/demo/merged ;;
    build)
      [ -f /tmp/q14b/config.json ] || python3 bench/bench_14b.py build --out /tmp/q14b --tokenizer .benchdata/tokenizer 2>&1 | tail -1
      cp .benchdata/tokenizer/* /tmp/q14b/
      du -sh /tmp/q14b ;;
    reference)
      python3 bench/bench_14b.py reference --model /tmp/q14b --data .benchdata/train.csv --json "$OUT/ref.json" \
        --n-ref-train "${N_REF_TRAIN:-256}" 2>&1 | tee "$OUT/ref.log" | quiet | tail -30 ;;
  esac
done
echo "=== done $(date +%T)"
