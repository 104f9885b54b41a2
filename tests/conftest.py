"""Shared fixtures: the real Qwen2.5 tokenizer (built offline), tiny random Qwen2 model directories, one trained run
and its exports. Plain helpers shared by several test files are in helpers.py."""

from __future__ import annotations

import os

import pytest

# Each pytest-xdist worker computes with its share of the cores: on 2 cores, two workers of two torch threads each
# took 147 s for a training test that two workers of one thread each ran in 51 s. Set before torch is imported;
# the scripts the tests launch inherit it.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, str(share))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mcqtune.model.loading import select_backend  # noqa: E402

select_backend("auto")  # Unsloth, when installed, must be imported before transformers/trl/peft
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from tests.helpers import SHARED_DATA, train_args  # noqa: E402
from tests.shared_runs import shared_folder  # noqa: E402


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
    # Files with slow tests first (each file kept whole, so module fixtures are built once): the workers start on the
    # long end-to-end runs and finish on short tests, instead of one worker finishing a long run alone at the end.
    slow_files = {item.path for item in items if "slow" in item.keywords}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from mcqtune.tiny.qwen import build_qwen_tokenizer

    return build_qwen_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, qwen_tokenizer):
    from mcqtune.tiny.qwen import write_tiny_qwen

    return shared_folder(tmp_path_factory, "tiny-qwen", {"shape": "tiny", "seed": 0},
                         lambda out: write_tiny_qwen(out, tokenizer=qwen_tokenizer))


@pytest.fixture(scope="session")
def cmmlu_dir():
    if not (SHARED_DATA / "train.csv").is_file():
        pytest.skip("../shared/data/cmmlu is not available")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
    from mcqtune.data.sample import write_sample

    return shared_folder(tmp_path_factory, "sample", {}, lambda out: write_sample(out))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_model_dir, sample_dir):
    """One real training run through train_sft.run on the sample questions (2 epochs, merged export), made once
    per session for every worker."""
    import json

    from mcqtune.train import sft as train_sft

    options = ("--export", "merged", "--merged_dtype", "float32")
    out = shared_folder(tmp_path_factory, "run", {"model": str(tiny_model_dir), "options": options},
                        lambda out: train_sft.run(*train_args(tiny_model_dir, sample_dir / "train.csv", out, *options)))
    summary = json.loads((out / "training_summary.json").read_text(encoding="utf-8"))
    return {"dir": out, "summary": summary, "model_dir": tiny_model_dir, "sample_dir": sample_dir}


@pytest.fixture(scope="session")
def random_adapter(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter with random (non-zero) weights on the float32 tiny model, saved as train_sft.py saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    def build(out):
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                init_lora_weights=False))
        model.save_pretrained(out)

    return shared_folder(tmp_path_factory, "random-adapter", {"model": str(tiny_model_dir)}, build)


@pytest.fixture(scope="session")
def merged_model(trained_run, tmp_path_factory):
    """The trained run's adapter merged into float32 weights, in several shards."""
    from mcqtune.model.merged import export_merged

    return shared_folder(tmp_path_factory, "merged", {"run": str(trained_run["dir"])},
                         lambda out: export_merged(trained_run["dir"] / "adapter", out,
                                                   base_model_id=str(trained_run["model_dir"]), dtype="float32",
                                                   max_shard_size="2MB"))
