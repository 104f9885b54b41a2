#!/usr/bin/env bash
# One device call on a single H200 (24 GiB cap): does the README inference command, loading the 16-bit weights
# and quantising them at load, fit in the host RAM of a 16 GB machine? The model is built on disk (not tmpfs),
# the page cache is dropped, and infer.py runs inside a cgroup with memory.max=16G and no swap, so the weight
# files' pages it reads are charged to it and must be reclaimed within the limit. Kept: the cgroup's
# memory.peak / memory.events (oom counts) / memory.stat, and report.json (anonymous vs file-backed peak).
#   device tool, kind nvidia-h200, carry [.gpu, .benchdata]:   bash bench/host16.sh
set -uo pipefail
CALL=host16; WATCHDOG_S=${WATCHDOG_S:-500}
source bench/call.sh   # $OUT, the watchdog, lap, finish_call
{ id; df -h /tmp "$PWD"; grep -E " /tmp | / " /proc/mounts; free -g; } > "$OUT/host.txt" 2>&1
export MCQ_BENCH_MODEL=$PWD/.q14b_disk   # on disk: tmpfs pages could not be dropped or reclaimed
source bench/gpu_env.sh
lap "model ready"
export MCQ_BENCH_CAP_GB=24
sync; { echo 3 > /proc/sys/vm/drop_caches && echo "page cache dropped"; free -g; } >> "$OUT/host.txt" 2>&1
CG=/sys/fs/cgroup/mcq16; LIMIT=${LIMIT:-16G}
mkdir -p $CG && echo $LIMIT > $CG/memory.max && { echo 0 > $CG/memory.swap.max; true; } 2>> "$OUT/host.txt"
( echo $BASHPID > $CG/cgroup.procs && exec python3 infer.py --config configs/infer-14b-4090.yaml \
    --model_path "$MCQ_BENCH_MODEL" --test_file .benchdata/test.csv --output_file /tmp/h16.csv --resume false ) \
  > "$OUT/infer16.log" 2>&1
echo "exit $?" > "$OUT/cgroup.txt"
for f in memory.max memory.swap.max memory.peak memory.events memory.stat; do echo "== $f"; cat $CG/$f; done \
  >> "$OUT/cgroup.txt" 2>&1
cp /tmp/h16_run/report.json "$OUT/infer16.json"
lap "infer in a $LIMIT cgroup"
finish_call
