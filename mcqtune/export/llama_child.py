"""llama.cpp (through llama-cpp-python) always runs in a child process: a native crash there -- a segmentation
fault in a k-quant kernel of a build made for another CPU, say -- ends the child, and the caller gets one line
that names the file, the signal and the fix instead of dying with it. The export quantises and checks every
GGUF it writes this way; the tests read llama.cpp's letter logits this way.

The child is ``python -m mcqtune.export.llama_worker``; the request goes in on standard input as JSON and the
answer comes back as the last line of its standard output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from mcqtune.errors import UserError

WORKER = [sys.executable, "-m", "mcqtune.export.llama_worker"]
PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the folder holding mcqtune/, for the child's imports
# How to build llama-cpp-python for any x86-64 machine with AVX2 (scripts/install-export.sh does this): the native
# build picks up AMX on Sapphire Rapids and later Xeons, whose k-quant path crashed in llama-cpp-python 0.3.36.
PORTABLE_BUILD = ('CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF '
                  '-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" pip install --force-reinstall '
                  '--no-cache-dir --no-deps llama-cpp-python==0.3.36')


class LlamaCrash(UserError):
    """llama.cpp died in the child process (a signal), or the child could not run at all."""


def run_llama(request: dict, what: str, timeout: float | None = 1800) -> dict:
    """Run one request in a child process; its JSON answer, or a one-line ``LlamaCrash`` saying ``what`` failed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_PARENT),
                                                                     os.environ.get("PYTHONPATH")]))}
    try:
        result = subprocess.run(WORKER, input=json.dumps(request), capture_output=True, text=True, env=env,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LlamaCrash(f"llama.cpp did not finish {what} within {timeout:.0f} s") from None
    if result.returncode < 0:
        name = signal.Signals(-result.returncode).name if -result.returncode in signal.valid_signals() else \
            f"signal {-result.returncode}"
        raise LlamaCrash(f"llama.cpp crashed ({name}) while {what}: this machine's llama-cpp-python build cannot "
                         f"run it; rebuild it for this CPU with {PORTABLE_BUILD}")
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise LlamaCrash(f"llama.cpp failed while {what} (exit status {result.returncode}): {last}")
    return json.loads(lines[-1])


def system_info() -> str:
    """The CPU features the installed llama.cpp was built with (AVX2, AMX ...), read in a child process."""
    return run_llama({"task": "system_info"}, "reading its build's CPU features", timeout=300)["system_info"]


def quantize(source: Path, out_file: Path, ftype: str) -> Path:
    """llama.cpp's quantiser (``ftype`` such as ``LLAMA_FTYPE_MOSTLY_Q4_K_M``) from ``source`` into ``out_file``."""
    run_llama({"task": "quantize", "source": str(source), "out": str(out_file), "ftype": ftype},
              f"quantising {source} to {out_file.name}")
    return out_file


def letter_logits(gguf: Path, prompts: list[list[int]], letter_ids: list[int], n_ctx: int = 1024) -> list[list[float]]:
    """llama.cpp's next-token logits of ``letter_ids`` after each prompt (token ids), one prompt at a time."""
    answer = run_llama({"task": "letter_logits", "model": str(gguf), "prompts": prompts, "letters": letter_ids,
                        "n_ctx": n_ctx}, f"evaluating {gguf}")
    return answer["logits"]


def tokenize(gguf: Path, text: str) -> list[int]:
    """llama.cpp's own tokenisation of ``text`` with the GGUF's vocabulary (no BOS added)."""
    return run_llama({"task": "tokenize", "model": str(gguf), "text": text}, f"tokenising with {gguf}")["ids"]
