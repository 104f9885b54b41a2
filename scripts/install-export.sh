#!/usr/bin/env bash
# Install the export tools (requirements-export.txt: llama.cpp's converter, llama-cpp-python, lm-eval) with
# llama-cpp-python built for any x86-64 CPU with AVX2 rather than for this one: the native build picks up AMX on
# Sapphire Rapids and later Xeons, and llama-cpp-python 0.3.36's AMX path crashes on k-quant GGUFs.
#   bash scripts/install-export.sh
# The first build takes 8-12 minutes on 2 cores; pip keeps the wheel. A wheel built earlier with other flags
# (pip's cache does not know the flags) is found by its CPU features and rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
"$PY" -m pip install -q -r requirements-export.txt
features=$("$PY" -c "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())")
if grep -qE "AMX_INT8 = 1|AVX512 = 1" <<<"$features"; then
  echo "llama-cpp-python was built for this CPU (${features}); rebuilding it for any AVX2 CPU"
  "$PY" -m pip install -q --force-reinstall --no-cache-dir --no-deps "$(grep -E '^llama-cpp-python' requirements-export.txt)"
fi
