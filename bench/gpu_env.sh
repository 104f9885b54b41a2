# Sourced by bench/*.sh on a device-tool machine: unpack the Unsloth stack once, set the offline / no-telemetry
# environment, put bench/cap (the per-process GPU memory cap) first on the path, keep NVLink multicast off.
if [ ! -d /tmp/site/unsloth ]; then mkdir -p /tmp/site && tar xJf .gpu/gpu-site.tar.xz -C /tmp/site; fi
export PYTHONPATH=$PWD/bench/cap:/tmp/site HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 PYTHONUNBUFFERED=1 \
  TOKENIZERS_PARALLELISM=false NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 \
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}   # several processes share the host's cores
# the 14B-shape model, built uncapped (random bf16 weights of the published shape, the real tokenizer)
[ -f /tmp/q14b/config.json ] || MCQ_BENCH_CAP_GB= python3 bench/bench_14b.py build --out /tmp/q14b \
  --tokenizer .benchdata/tokenizer 2>&1 | tail -1
cp .benchdata/tokenizer/* /tmp/q14b/
