"""Shared fixtures: the real Qwen2.5 tokenizer (built offline), tiny random Qwen2 model directories, one trained run
and its exports. Plain helpers shared by several test files are in helpers.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = ROOT.parent / "shared" / "data" / "cmmlu"

from modeling import select_backend  # noqa: E402

select_backend("auto")  # Unsloth, when installed, must be imported before transformers/trl/peft


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped on CPU-only machines")
    config.addinivalue_line("markers", "slow: trains or answers with a trained model, or launches a script in a "
                                       "subprocess; -m 'not slow' is the fast lane")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from tiny_qwen import build_qwen_tokenizer

    return build_qwen_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, qwen_tokenizer):
    from tiny_qwen import write_tiny_qwen

    return write_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen"), tokenizer=qwen_tokenizer)


@pytest.fixture(scope="session")
def cmmlu_dir():
    if not (SHARED_DATA / "train.csv").is_file():
        pytest.skip("../shared/data/cmmlu is not available")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
    from sample_data import write_sample

    out = tmp_path_factory.mktemp("sample")
    write_sample(out)
    return out


def train_args(model_dir, train_file, output_dir, *extra):
    """Parsed (script_args, training_args) for the CPU demo config with overrides, as the CLI builds them."""
    from train_sft import make_parser

    argv = ["--config", str(ROOT / "configs" / "demo-cpu.yaml"), "--model_name_or_path", str(model_dir),
            "--train_file", str(train_file), "--output_dir", str(output_dir), *map(str, extra)]
    return make_parser().parse_args_and_config(argv)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_model_dir, sample_dir):
    """One real training run through train_sft.main on the sample questions (2 epochs, merged export)."""
    import train_sft

    out = tmp_path_factory.mktemp("run")
    script_args, training_args = train_args(tiny_model_dir, sample_dir / "train.csv", out,
                                            "--export", "merged", "--merged_dtype", "float32")
    summary = train_sft.main(script_args, training_args)
    return {"dir": out, "summary": summary, "model_dir": tiny_model_dir, "sample_dir": sample_dir}


@pytest.fixture(scope="session")
def random_adapter(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter with random (non-zero) weights on the float32 tiny model, saved as train_sft.py saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    out = tmp_path_factory.mktemp("random-adapter")
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def merged_model(trained_run, tmp_path_factory):
    """The trained run's adapter merged into float32 weights, in several shards."""
    from merged_export import export_merged

    out = tmp_path_factory.mktemp("merged")
    return export_merged(trained_run["dir"] / "adapter", out, base_model_id=str(trained_run["model_dir"]),
                         dtype="float32", max_shard_size="2MB")
