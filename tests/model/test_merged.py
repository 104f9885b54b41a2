"""model/merged.py: sharded merged weights that plain transformers loads and that answer as base + adapter do, in
the base's own dtype unless another is asked for."""

import json

import numpy as np
import pytest
import torch

from mcqtune.cli import export as export_cli
from mcqtune.model import merged as merged_export
from mcqtune.errors import run_cli
from tests.helpers import letter_logits_hf
from mcqtune.data.questions import DEFAULT_SYSTEM_PROMPT, load_mcq_csv


@pytest.mark.slow
def test_merged_export_is_sharded_documented_and_equals_the_adapter(trained_run, merged_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    files = {p.name for p in merged_model.iterdir()}
    assert "model.safetensors.index.json" in files and len([f for f in files if f.endswith(".safetensors")]) >= 2
    assert not any(f.endswith(".bin") for f in files)
    generation = json.loads((merged_model / "generation_config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(merged_model)
    assert generation["do_sample"] is False
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in generation["eos_token_id"]
    assert "<|im_start|>" in tokenizer.chat_template
    card = (merged_model / "README.md").read_text()
    accuracy = trained_run["summary"]["best_eval_accuracy"]
    assert f"base_model: {trained_run['model_dir']}" in card and "r=16, alpha=32" in card
    assert f"validation accuracy: {accuracy:.2%}" in card and DEFAULT_SYSTEM_PROMPT in card

    frame = load_mcq_csv(trained_run["sample_dir"] / "test.csv").head(24)
    merged = AutoModelForCausalLM.from_pretrained(merged_model, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(trained_run["model_dir"], dtype=torch.float32)
    adapter = PeftModel.from_pretrained(base, trained_run["dir"] / "adapter").eval()
    difference = np.abs(letter_logits_hf(merged, tokenizer, frame) - letter_logits_hf(adapter, tokenizer, frame)).max()
    assert difference < 1e-3, difference


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
    assert run_cli(export_cli.main, ["--adapter_path", str(random_adapter), "--output_dir", str(tmp_path / "m")]) == 0
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
    out = merged_export.export_merged(random_adapter, tmp_path / "bf16", dtype="bfloat16")
    assert weight_dtypes(out) == {"BF16"}
    assert "- weights: bfloat16 (asked for with --dtype; the base is float32)" in (out / "README.md").read_text()


@pytest.mark.parametrize("config, expected", [({"dtype": "bfloat16"}, "bfloat16"),
                                              ({"torch_dtype": "float16"}, "float16"),
                                              ({"torch_dtype": "torch.float32"}, "float32"), ({}, "float32")])
def test_the_default_dtype_is_the_one_the_base_config_records(tmp_path, config, expected):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", **config}))
    recorded = merged_export.read_base_dtype(str(tmp_path))
    assert merged_export.choose_merged_dtype(None, recorded, str(tmp_path)) == expected
    assert merged_export.choose_merged_dtype("float16", recorded, str(tmp_path)) == "float16"


def test_a_base_dtype_merged_weights_cannot_keep_asks_for_dtype(tmp_path):
    with pytest.raises(merged_export.ExportError, match="pass --dtype"):
        merged_export.choose_merged_dtype(None, "float8_e4m3fn", str(tmp_path))


def test_a_merged_model_carries_its_adapters_prompt_and_infer_adopts_it(random_adapter, tmp_path):
    """Trained with its own prompt, answered merged: infer.py uses that prompt, as it does with the adapter."""
    import shutil

    from mcqtune.infer.options import InferArguments
    from mcqtune.infer.setup import adopt_training_prompt

    adapter = tmp_path / "adapter"
    shutil.copytree(random_adapter, adapter)
    prompt = {"system_prompt": "", "user_template": "题目：{question}\nA:{A}\nB:{B}\nC:{C}\nD:{D}\n答：",
              "max_prompt_tokens": 512, "reasoning": False}
    (adapter / "mcq_provenance.json").write_text(json.dumps({"base_model": "b", "prompt": prompt}))
    out = merged_export.export_merged(adapter, tmp_path / "merged", dtype="float32")
    record = json.loads((out / "mcq_provenance.json").read_text())
    assert record["prompt"] == prompt and record["merged_from"] == str(adapter.resolve())
    adopted, info = adopt_training_prompt(InferArguments(model_path=str(out), test_file="t.csv"))
    assert (adopted.system_prompt, adopted.user_template) == ("", prompt["user_template"])
    assert info["adopted_from_adapter"] == ["system_prompt", "user_template"]
