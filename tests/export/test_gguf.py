"""export/gguf.py: an f16 GGUF that llama.cpp runs answers as transformers does; a k-quant loads; llama.cpp always runs
in a child process, so that its crash is one line (and a failed test), never a dead caller."""

import signal
import sys

import numpy as np
import pytest
import torch

from mcqtune.data.questions import DEFAULT_SYSTEM_PROMPT, load_mcq_csv
from mcqtune.model.prompts import encode_prompt
from mcqtune.export import llama_child
from mcqtune.model.merged import ExportError
from tests.helpers import letter_logits_hf

needs_llama_cpp = pytest.mark.skipif(not __import__("importlib").util.find_spec("llama_cpp"),
                                     reason="llama-cpp-python is not installed (scripts/install-export.sh)")


@needs_llama_cpp
@pytest.mark.slow
def test_gguf_f16_answers_like_transformers_and_q4_k_m_loads(trained_run, merged_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mcqtune.export.gguf import export_gguf

    adapter = trained_run["dir"] / "adapter"
    f16 = export_gguf(adapter, tmp_path / "f16", "f16", merged_dir=merged_model)
    modelfile = (f16.parent / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{f16.name}") and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert DEFAULT_SYSTEM_PROMPT in modelfile and "PARAMETER temperature 0" in modelfile

    tokenizer = AutoTokenizer.from_pretrained(merged_model)
    frame = load_mcq_csv(trained_run["sample_dir"] / "test.csv")
    reference = letter_logits_hf(AutoModelForCausalLM.from_pretrained(merged_model, dtype=torch.float32).eval(),
                                 tokenizer, frame).argmax(axis=1)
    letters = [tokenizer.convert_tokens_to_ids(x) for x in "ABCD"]
    assert llama_child.tokenize(f16, "你好，世界！Hello world") == [108386, 3837, 99489, 6313, 9707, 1879]
    logits = llama_child.letter_logits(f16, [encode_prompt(tokenizer, row) for _, row in frame.iterrows()], letters)
    agreement = float(np.mean(np.argmax(np.asarray(logits), axis=1) == reference))
    assert agreement >= 0.95, agreement

    q4 = export_gguf(adapter, tmp_path / "q4", "q4_k_m", merged_dir=merged_model)
    assert q4.name == "model-q4_k_m.gguf" and q4.stat().st_size < f16.stat().st_size
    small = llama_child.letter_logits(q4, [encode_prompt(tokenizer, frame.iloc[0])], letters, n_ctx=256)
    assert np.isfinite(np.asarray(small)).all()


CRASH = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]


def test_a_crash_in_llama_cpp_is_one_line_not_a_dead_caller(monkeypatch, tmp_path):
    monkeypatch.setattr(llama_child, "WORKER", CRASH)
    with pytest.raises(llama_child.LlamaCrash) as caught:
        llama_child.letter_logits(tmp_path / "model-q4_k_m.gguf", [[1, 2, 3]], [32, 33, 34, 35])
    message = str(caught.value)
    assert "\n" not in message and "SIGSEGV" in message and "model-q4_k_m.gguf" in message
    assert "GGML_NATIVE=OFF" in message  # the rebuild that fixes it


def test_a_gguf_that_crashes_llama_cpp_is_not_handed_over(monkeypatch, merged_model, tmp_path):
    """verify_gguf renames the file *.unverified and stops the export with one line."""
    from mcqtune.export import gguf

    monkeypatch.setattr(gguf, "llama_cpp_installed", lambda: True)
    monkeypatch.setattr(llama_child, "WORKER", CRASH)
    written = tmp_path / "model-q4_k_m.gguf"
    written.write_bytes(b"GGUF")
    with pytest.raises(ExportError, match="not handed over") as caught:
        gguf.verify_gguf(written, merged_model)
    assert "\n" not in str(caught.value) and signal.SIGSEGV.name in str(caught.value)
    assert not written.exists() and (tmp_path / "model-q4_k_m.gguf.unverified").read_bytes() == b"GGUF"


def test_a_failing_child_is_reported_with_its_last_message(monkeypatch, tmp_path):
    monkeypatch.setattr(llama_child, "WORKER", [sys.executable, "-c", "raise SystemExit('no such model file')"])
    with pytest.raises(llama_child.LlamaCrash, match="exit status 1.*no such model file"):
        llama_child.tokenize(tmp_path / "missing.gguf", "x")


@needs_llama_cpp
def test_the_installed_llama_cpp_is_built_without_amx():
    """scripts/install-export.sh builds llama-cpp-python for any AVX2 CPU (AMX's k-quant path crashed)."""
    info = llama_child.system_info()
    assert "AMX_INT8 = 1" not in info and "AVX512 = 1" not in info, info
