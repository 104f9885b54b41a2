"""export.py: merged weights that plain transformers loads, GGUF that llama.cpp runs, an lm-eval task that agrees."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT
from mcq_dataset import DEFAULT_SYSTEM_PROMPT, encode_prompt, load_mcq_csv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def merged_export(trained_run, tmp_path_factory):
    from export import export_merged

    out = tmp_path_factory.mktemp("merged")
    return export_merged(trained_run["dir"] / "adapter", out, base_model_id=str(trained_run["model_dir"]),
                         dtype="float32", max_shard_size="2MB")


def letter_logits_hf(model, tokenizer, frame):
    letters = [tokenizer.convert_tokens_to_ids(x) for x in "ABCD"]
    rows = []
    with torch.no_grad():
        for _, row in frame.iterrows():
            rows.append(model(torch.tensor([encode_prompt(tokenizer, row)])).logits[0, -1, letters].numpy())
    return np.array(rows)


def test_merged_export_is_sharded_documented_and_equals_the_adapter(trained_run, merged_export):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    files = {p.name for p in merged_export.iterdir()}
    assert "model.safetensors.index.json" in files and len([f for f in files if f.endswith(".safetensors")]) >= 2
    assert not any(f.endswith(".bin") for f in files)
    generation = json.loads((merged_export / "generation_config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(merged_export)
    assert generation["do_sample"] is False
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in generation["eos_token_id"]
    assert "<|im_start|>" in tokenizer.chat_template
    card = (merged_export / "README.md").read_text()
    accuracy = trained_run["summary"]["best_eval_accuracy"]
    assert f"base_model: {trained_run['model_dir']}" in card and "r=16, alpha=32" in card
    assert f"validation accuracy: {accuracy:.2%}" in card and DEFAULT_SYSTEM_PROMPT in card

    frame = load_mcq_csv(trained_run["sample_dir"] / "test.csv").head(24)
    merged = AutoModelForCausalLM.from_pretrained(merged_export, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(trained_run["model_dir"], dtype=torch.float32)
    adapter = PeftModel.from_pretrained(base, trained_run["dir"] / "adapter").eval()
    difference = np.abs(letter_logits_hf(merged, tokenizer, frame) - letter_logits_hf(adapter, tokenizer, frame)).max()
    assert difference < 1e-3, difference


def test_a_checkpoint_exports_as_a_clean_adapter_with_its_step_and_accuracy(trained_run, tmp_path):
    from export import export_adapter

    checkpoint = sorted((trained_run["dir"]).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[0]
    out = export_adapter(checkpoint, tmp_path / "shared")
    files = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json", "README.md"} <= files
    assert not files & {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "mcq_checkpoint.json"}
    card = (out / "README.md").read_text()
    assert f"checkpoint at step {checkpoint.name.split('-')[1]}" in card and "validation accuracy: " in card


def test_gguf_f16_answers_like_transformers_and_q4_k_m_loads(trained_run, merged_export, tmp_path):
    import llama_cpp
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from export import export_gguf

    adapter = trained_run["dir"] / "adapter"
    f16 = export_gguf(adapter, tmp_path / "f16", "f16", merged_dir=merged_export)
    modelfile = (f16.parent / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{f16.name}") and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert DEFAULT_SYSTEM_PROMPT in modelfile and "PARAMETER temperature 0" in modelfile

    tokenizer = AutoTokenizer.from_pretrained(merged_export)
    frame = load_mcq_csv(trained_run["sample_dir"] / "test.csv")
    reference = letter_logits_hf(AutoModelForCausalLM.from_pretrained(merged_export, dtype=torch.float32).eval(),
                                 tokenizer, frame).argmax(axis=1)
    letters = [tokenizer.convert_tokens_to_ids(x) for x in "ABCD"]
    llm = llama_cpp.Llama(model_path=str(f16), n_ctx=1024, logits_all=True, verbose=False)
    try:
        assert llm.tokenize("你好，世界！Hello world".encode(), add_bos=False) == [108386, 3837, 99489, 6313, 9707, 1879]
        chosen = []
        for _, row in frame.iterrows():
            llm.reset()
            llm.eval(encode_prompt(tokenizer, row))
            chosen.append(int(np.argmax(np.asarray(llm.scores[llm.n_tokens - 1])[letters])))
    finally:
        llm.close()
    agreement = float(np.mean(np.array(chosen) == reference))
    assert agreement >= 0.95, agreement

    q4 = export_gguf(adapter, tmp_path / "q4", "q4_k_m", merged_dir=merged_export)
    assert q4.name == "model-q4_k_m.gguf" and q4.stat().st_size < f16.stat().st_size
    small = llama_cpp.Llama(model_path=str(q4), n_ctx=256, logits_all=True, verbose=False)
    try:
        small.eval(encode_prompt(tokenizer, frame.iloc[0]))
        assert np.isfinite(np.asarray(small.scores[small.n_tokens - 1])[letters]).all()
    finally:
        small.close()


def test_lm_eval_task_reproduces_infer_answers(trained_run, merged_export, tmp_path):
    import infer
    from export import write_lm_eval_task
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    test_file = trained_run["sample_dir"] / "test.csv"
    task_file = write_lm_eval_task(test_file, tmp_path / "task")
    results = simple_evaluate(model="hf", model_args={"pretrained": str(merged_export), "dtype": "float32"},
                              tasks=[task_file.stem], task_manager=TaskManager(include_path=str(task_file.parent)),
                              apply_chat_template=True, system_instruction=DEFAULT_SYSTEM_PROMPT, log_samples=True,
                              batch_size=16, device="cpu")
    samples = sorted(results["samples"][task_file.stem], key=lambda s: s["doc_id"])
    harness = ["ABCD"[int(np.argmax([r[0] for r in s["filtered_resps"]]))] for s in samples]
    report = infer.main(infer.InferArguments(test_file=str(test_file), model_path=str(merged_export),
                                             output_file=str(tmp_path / "sub.csv"), load_in_4bit=False, backend="hf"))
    ours = list(pd.read_csv(tmp_path / "sub.csv", dtype=str)["answer"])
    agreement = float(np.mean(np.array(harness) == np.array(ours)))
    assert len(harness) == report["rows"] == 160 and agreement >= 0.98, agreement


def test_cli_refuses_a_folder_that_is_no_adapter(tmp_path):
    result = subprocess.run([sys.executable, "export.py", "--adapter_path", tmp_path, "--format", "merged",
                             "--output_dir", tmp_path / "out"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 1 and "is not a LoRA adapter folder" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
