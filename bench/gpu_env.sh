# Sourced by bench/*.sh on a device-tool machine: unpack the Unsloth stack once, set the offline / no-telemetry
# environment, put bench/cap (the per-process GPU memory cap) first on the path, keep NVLink multicast off.
if [ ! -d /tmp/site/unsloth ]; then mkdir -p /tmp/site && tar xJf .gpu/gpu-site.tar.xz -C /tmp/site; fi
export PYTHONPATH=$PWD/bench/cap:/tmp/site HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 PYTHONUNBUFFERED=1 \
  TOKENIZERS_PARALLELISM=false NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 \
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}   # several processes share the host's cores
# the 14B-shape model, built uncapped (random bf16 weights of the published shape, the real tokenizer), in
# /tmp/q14b unless MCQ_BENCH_MODEL names another folder
# (NO_Q14B=1: a call that needs another model; the machine's disk holds one 14B model at a time)
MCQ_BENCH_MODEL=${MCQ_BENCH_MODEL:-/tmp/q14b}
if [ -z "${NO_Q14B:-}" ]; then
  [ -f "$MCQ_BENCH_MODEL/config.json" ] || MCQ_BENCH_CAP_GB= python3 bench/bench_14b.py build \
    --out "$MCQ_BENCH_MODEL" --tokenizer .benchdata/tokenizer 2>&1 | tail -1
  cp .benchdata/tokenizer/* "$MCQ_BENCH_MODEL/"
fi
