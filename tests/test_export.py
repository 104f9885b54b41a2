"""export.py: merged weights that plain transformers loads, GGUF that llama.cpp runs, an lm-eval task that agrees;
damaged weights and conflicting options fail with one line."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import export
from cli import run_cli
from conftest import ROOT
from mcq_dataset import DEFAULT_SYSTEM_PROMPT, encode_prompt, load_mcq_csv


@pytest.fixture(scope="module")
def random_adapter(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter with random (non-zero) weights on the float32 tiny model, saved as train_sft.py saves one."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    out = tmp_path_factory.mktemp("random-adapter")
    model.save_pretrained(out)
    return out


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_checkpoint_exports_as_a_clean_adapter_with_its_step_and_accuracy(trained_run, tmp_path):
    from export import export_adapter

    checkpoint = sorted((trained_run["dir"]).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[0]
    out = export_adapter(checkpoint, tmp_path / "shared")
    files = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json", "README.md"} <= files
    assert not files & {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "mcq_checkpoint.json"}
    card = (out / "README.md").read_text()
    assert f"checkpoint at step {checkpoint.name.split('-')[1]}" in card and "validation accuracy: " in card


@pytest.mark.slow
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

    q4 = export_gguf(adapter, tmp_path / "q4", "q4_k_m", merged_dir=merged_export)
    assert q4.name == "model-q4_k_m.gguf" and q4.stat().st_size < f16.stat().st_size
    small = llama_cpp.Llama(model_path=str(q4), n_ctx=256, logits_all=True, verbose=False)
    try:
        small.eval(encode_prompt(tokenizer, frame.iloc[0]))
        assert np.isfinite(np.asarray(small.scores[small.n_tokens - 1])[letters]).all()
    finally:
        small.close()


@pytest.mark.slow
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


# ------------------------------------------------------------------------------------------ dtype of merged weights


def weight_dtypes(folder) -> set[str]:
    from safetensors import safe_open

    dtypes = set()
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as handle:
            dtypes |= {handle.get_slice(name).get_dtype() for name in handle.keys()}
    return dtypes


def test_merged_export_keeps_a_float32_base_float32_and_answers_as_base_plus_adapter(tiny_model_dir, random_adapter,
                                                                                       qwen_tokenizer, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert json.loads((tiny_model_dir / "config.json").read_text())["dtype"] == "float32"
    assert run_cli(export.main, ["--adapter_path", str(random_adapter), "--output_dir", str(tmp_path / "m")]) == 0
    merged_dir = tmp_path / "m"
    assert weight_dtypes(merged_dir) == {"F32"}
    assert json.loads((merged_dir / "config.json").read_text())["dtype"] == "float32"
    assert "- weights: float32 (the base model's own dtype)" in (merged_dir / "README.md").read_text()

    prompt = torch.tensor([qwen_tokenizer.encode("问题：历史 A B C D")])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype="auto").eval()
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        adapted = PeftModel.from_pretrained(base, random_adapter).eval()
        difference = (merged(prompt).logits[0, -1] - adapted(prompt).logits[0, -1]).abs().max().item()
    assert difference < 1e-4, difference


def test_merged_export_writes_the_dtype_asked_for_and_says_so(random_adapter, tmp_path):
    out = export.export_merged(random_adapter, tmp_path / "bf16", dtype="bfloat16")
    assert weight_dtypes(out) == {"BF16"}
    assert "- weights: bfloat16 (asked for with --dtype; the base is float32)" in (out / "README.md").read_text()


@pytest.mark.parametrize("config, expected", [({"dtype": "bfloat16"}, "bfloat16"),
                                              ({"torch_dtype": "float16"}, "float16"),
                                              ({"torch_dtype": "torch.float32"}, "float32"), ({}, "float32")])
def test_the_default_dtype_is_the_one_the_base_config_records(tmp_path, config, expected):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", **config}))
    recorded = export.read_base_dtype(str(tmp_path))
    assert export.choose_merged_dtype(None, recorded, str(tmp_path)) == expected
    assert export.choose_merged_dtype("float16", recorded, str(tmp_path)) == "float16"


def test_a_base_dtype_merged_weights_cannot_keep_asks_for_dtype(tmp_path):
    with pytest.raises(export.ExportError, match="pass --dtype"):
        export.choose_merged_dtype(None, "float8_e4m3fn", str(tmp_path))


# ------------------------------------------------------------------------------------------ damaged weights


def damaged_copy(adapter, folder):
    shutil.copytree(adapter, folder)
    weights = folder / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return folder


@pytest.mark.parametrize("format_", ["adapter", "merged"])
def test_a_cut_short_adapter_fails_with_one_line(random_adapter, tmp_path, capsys, format_):
    adapter = damaged_copy(random_adapter, tmp_path / "cut")
    status = run_cli(export.main, ["--adapter_path", str(adapter), "--format", format_,
                                   "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1, err
    assert "adapter_model.safetensors" in err[0] and "cut short" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "out").exists()


def test_a_copy_that_comes_out_short_fails(random_adapter, tmp_path, capsys, monkeypatch):
    copy2 = shutil.copy2

    def short_copy(source, target):
        copy2(source, target)
        if str(target).endswith(".safetensors"):
            data = open(target, "rb").read()
            open(target, "wb").write(data[:-100])

    monkeypatch.setattr(shutil, "copy2", short_copy)
    status = run_cli(export.main, ["--adapter_path", str(random_adapter), "--format", "adapter",
                                   "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and "bytes: check the free space" in err[0], err


def test_a_copy_that_comes_out_damaged_fails(random_adapter, tmp_path, capsys, monkeypatch):
    copy2 = shutil.copy2

    def garbling_copy(source, target):
        copy2(source, target)
        if str(target).endswith(".safetensors"):
            data = bytearray(open(target, "rb").read())
            data[:8] = (2**40).to_bytes(8, "little")  # a header length far past the end of the file
            open(target, "wb").write(bytes(data))

    monkeypatch.setattr(shutil, "copy2", garbling_copy)
    status = run_cli(export.main, ["--adapter_path", str(random_adapter), "--format", "adapter",
                                   "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and str(tmp_path / "out" / "adapter_model.safetensors") in err[0], err


def test_a_whole_adapter_exports_and_its_copy_is_verified(random_adapter, tmp_path):
    assert run_cli(export.main, ["--adapter_path", str(random_adapter), "--format", "adapter",
                                 "--output_dir", str(tmp_path / "out")]) == 0
    copied = tmp_path / "out" / "adapter_model.safetensors"
    assert copied.read_bytes() == (random_adapter / "adapter_model.safetensors").read_bytes()


# ------------------------------------------------------------------------------------------ options


@pytest.mark.parametrize("extra, message", [
    (["--format", "gguf"], "--lm_eval_task writes an lm-eval task and exports no model"),
    (["--format", "merged"], "--lm_eval_task writes an lm-eval task and exports no model"),
    (["--adapter_path", "x"], "--adapter_path does not apply to --lm_eval_task"),
])
def test_lm_eval_task_refuses_model_options(sample_dir, tmp_path, capsys, extra, message):
    status = run_cli(export.main, ["--lm_eval_task", str(sample_dir / "test.csv"), *extra,
                                   "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--format", "adapter", "--dtype", "float16"], "--dtype does not apply to --format adapter"),
    (["--format", "gguf", "--dtype", "float32"], "--dtype does not apply to --format gguf"),
    (["--format", "merged", "--gguf_type", "f16"], "--gguf_type does not apply to --format merged"),
    (["--model", "Qwen/Qwen2.5-0.5B"],
     "--model does not apply to --format merged: leave it out (it is for --format 4bit)"),
])
def test_options_the_format_does_not_use_are_refused(random_adapter, tmp_path, capsys, argv, message):
    status = run_cli(export.main, ["--adapter_path", str(random_adapter), *argv, "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_lm_eval_task_alone_is_written(sample_dir, tmp_path):
    assert run_cli(export.main, ["--lm_eval_task", str(sample_dir / "test.csv"), "--output_dir", str(tmp_path)]) == 0
    assert (tmp_path / "mcq_test.yaml").is_file()


def test_main_raises_what_run_cli_prints(tmp_path):
    with pytest.raises(export.ExportError, match="is not a LoRA adapter folder"):
        export.main(["--adapter_path", str(tmp_path), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(export.ExportError, match="needs --adapter_path"):
        export.main(["--format", "adapter", "--output_dir", str(tmp_path / "out")])


def test_an_export_never_writes_into_a_used_folder(random_adapter, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in random_adapter.iterdir() if p.is_file()}
    for target in (random_adapter, random_adapter.parent):  # the adapter itself, the run folder around it
        status = run_cli(export.main, ["--adapter_path", str(random_adapter), "--format", "adapter",
                                       "--output_dir", str(target)])
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 1 and len(err) == 1 and "is not an empty folder" in err[0], err
    assert {p.name: p.read_bytes() for p in random_adapter.iterdir() if p.is_file()} == before
