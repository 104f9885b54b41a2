"""gguf_export: an f16 GGUF that llama.cpp runs answers as transformers does; a k-quant loads."""

import numpy as np
import pytest
import torch

from tests.helpers import letter_logits_hf
from mcqtune.data.questions import DEFAULT_SYSTEM_PROMPT, encode_prompt, load_mcq_csv


@pytest.mark.slow
def test_gguf_f16_answers_like_transformers_and_q4_k_m_loads(trained_run, merged_model, tmp_path):
    import llama_cpp
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
    llm = llama_cpp.Llama(model_path=str(f16), n_ctx=1024, logits_all=True, verbose=False)
    try:
        assert (llm.tokenize("你好，世界！Hello world".encode(), add_bos=False)
                == [108386, 3837, 99489, 6313, 9707, 1879])
        chosen = []
        for _, row in frame.iterrows():
            llm.reset()
            llm.eval(encode_prompt(tokenizer, row))
            chosen.append(int(np.argmax(np.asarray(llm.scores[llm.n_tokens - 1])[letters])))
    finally:
        llm.close()
    agreement = float(np.mean(np.array(chosen) == reference))
    assert agreement >= 0.95, agreement

    q4 = export_gguf(adapter, tmp_path / "q4", "q4_k_m", merged_dir=merged_model)
    assert q4.name == "model-q4_k_m.gguf" and q4.stat().st_size < f16.stat().st_size
    small = llama_cpp.Llama(model_path=str(q4), n_ctx=256, logits_all=True, verbose=False)
    try:
        small.eval(encode_prompt(tokenizer, frame.iloc[0]))
        assert np.isfinite(np.asarray(small.scores[small.n_tokens - 1])[letters]).all()
    finally:
        small.close()
