#!/usr/bin/env bash
# One device call on a single H200, every process capped at 24 GiB: the README training command with the
# micro-batch of the config (16 x 2 accumulation) and with 32 x 1 (same effective batch), or with another batch
# order, 52 steps each (evaluation + checkpoint at 26 and 52, loss every 2 steps; 52 because group_by_length
# sorts mega-batches of 50 steps, so steps 3-52 hold one mega-batch's mix of lengths), the reference recipe,
# and the README inference command, in the order given by RUNS (default: "b32 b16 ref"). Run names:
#   b16, b32      train_sft.py --config configs/qwen2.5-14b-4090.yaml, micro-batch 16 x 2 or 32 x 1 (a second
#                 run of the same name in one call gets a suffix: b32_2)
#   random, batch_rebalance, group_by_length
#                 the config (16 x 2) with that --train_sampling_strategy (what the sampling*_h200 calls ran;
#                 three orders take ~11 minutes on a fresh machine, more than one call)
#   ref           bench_14b.py reference (the reference recipe: training, 48-token generation)
#   infer         infer.py --config configs/infer-14b-4090.yaml with the adapter of the last training run
#   gen           the same with --mode generate (the automatic batch from the generation memory model); with no
#                 training run before it in the call, on the base model (no adapter)
#   kfold         train_sft.py --config configs/qwen2.5-14b-4090.yaml --folds 2 (MAX_STEPS steps per fold), then
#                 infer.py with each fold's adapter on the test file, ensemble.py of the two, and infer.py with the
#                 k-fold folder (both adapters averaged in one pass); each timed in times.txt
#   infer16       the same inside a cgroup with memory.max=16G (host RAM of a 16 GB machine), if the machine lets
#                 this process create one; the cgroup's memory.peak and events are kept
#   device tool, kind nvidia-h200, carry [.gpu, .benchdata]:   RUNS="b32 b16 ref" bash bench/microbatch.sh
set -uo pipefail
CALL=${CALL:-microbatch}; WATCHDOG_S=${WATCHDOG_S:-575}
source bench/call.sh   # $OUT, the watchdog, lap, finish_call
source bench/gpu_env.sh
lap "model ready"
export MCQ_BENCH_CAP_GB=24
TRAIN=(python3 train_sft.py --config configs/qwen2.5-14b-4090.yaml --model_name_or_path /tmp/q14b
       --train_file .benchdata/train.csv --max_steps ${MAX_STEPS:-52} --eval_steps 26 --save_steps 26 --logging_steps 2)
INFER=(python3 infer.py --config configs/infer-14b-4090.yaml --test_file .benchdata/test.csv --resume false)
ADAPTER=""
name_for() {   # a run's name, suffixed when the call already ran one of that kind
  local n=$1 i=2
  while [ -e "$OUT/$n.json" ] || [ -e "$OUT/train_$n.json" ]; do n=$1_$i; i=$((i + 1)); done
  echo "$n"
}
for run in ${RUNS:-b32 b16 ref}; do
  name=$(name_for "$run")
  case $run in
    b16) "${TRAIN[@]}" --output_dir /tmp/m_$name > "$OUT/$name.log" 2>&1
         cp /tmp/m_$name/training_summary.json "$OUT/$name.json"; ADAPTER=/tmp/m_$name/adapter ;;
    random|batch_rebalance|group_by_length)
         "${TRAIN[@]}" --train_sampling_strategy $run --output_dir /tmp/m_$name > "$OUT/train_$name.log" 2>&1
         cp /tmp/m_$name/training_summary.json "$OUT/train_$name.json"; ADAPTER=/tmp/m_$name/adapter ;;
    b32) "${TRAIN[@]}" --per_device_train_batch_size 32 --gradient_accumulation_steps 1 --output_dir /tmp/m_$name \
           > "$OUT/$name.log" 2>&1
         cp /tmp/m_$name/training_summary.json "$OUT/$name.json"; ADAPTER=/tmp/m_$name/adapter ;;
    ref) python3 bench/bench_14b.py reference --model /tmp/q14b --data .benchdata/train.csv --json "$OUT/$name.json" \
           --n-ref-train ${N_REF_TRAIN:-128} --n-ref-generate ${N_REF_GENERATE:-8} > "$OUT/$name.log" 2>&1 ;;
    infer) "${INFER[@]}" --model_path "$ADAPTER" --output_file /tmp/$name.csv > "$OUT/$name.log" 2>&1
           cp /tmp/${name}_run/report.json "$OUT/$name.json" ;;
    gen) "${INFER[@]}" --mode generate --model_path "${ADAPTER:-/tmp/q14b}" --output_file /tmp/$name.csv > "$OUT/$name.log" 2>&1
         cp /tmp/${name}_run/report.json "$OUT/$name.json" ;;
    kfold)
      "${TRAIN[@]}" --folds 2 --output_dir /tmp/m_kfold > "$OUT/kfold_train.log" 2>&1; lap "kfold_train"
      cp /tmp/m_kfold/cv_summary.json "$OUT/kfold_cv.json"
      for f in 0 1; do cp /tmp/m_kfold/fold-$f/training_summary.json "$OUT/kfold_fold$f.json"
        "${INFER[@]}" --model_path /tmp/m_kfold/fold-$f/adapter --output_file /tmp/kfold_$f.csv \
          > "$OUT/kfold_infer$f.log" 2>&1; cp /tmp/kfold_${f}_run/report.json "$OUT/kfold_infer$f.json"
        lap "kfold_infer$f"; done
      python3 ensemble.py /tmp/kfold_0_run /tmp/kfold_1_run --output_file /tmp/kfold_ens.csv > "$OUT/kfold_ens.log" 2>&1
      lap "kfold_ensemble"; cp /tmp/kfold_ens_ensemble/ensemble_report.json "$OUT/kfold_ens.json"
      "${INFER[@]}" --model_path /tmp/m_kfold --output_file /tmp/kfold_all.csv > "$OUT/kfold_all.log" 2>&1
      cp /tmp/kfold_all_run/report.json "$OUT/kfold_all.json" ;;
    infer16)
      CG=/sys/fs/cgroup/mcq16
      if mkdir -p $CG 2>"$OUT/$name.cgroup.txt" && echo 16G > $CG/memory.max 2>>"$OUT/$name.cgroup.txt"; then
        ( echo $BASHPID > $CG/cgroup.procs && exec "${INFER[@]}" --model_path "$ADAPTER" \
            --output_file /tmp/$name.csv ) > "$OUT/$name.log" 2>&1
        echo "exit $?" >> "$OUT/$name.cgroup.txt"
        for f in memory.max memory.peak memory.events memory.stat; do echo "== $f"; cat $CG/$f; done \
          >> "$OUT/$name.cgroup.txt" 2>&1
        cp /tmp/${name}_run/report.json "$OUT/$name.json" 2>/dev/null
      else
        echo "no cgroup: $(cat /proc/self/cgroup); $(ls -ld /sys/fs/cgroup)" >> "$OUT/$name.cgroup.txt"
      fi ;;
    *) echo "unknown run $run" >> "$OUT/times.txt" ;;
  esac
  lap "$name"
done
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
finish_call
