"""Shared fixtures: the real Qwen2.5 tokenizer (built offline) and tiny random Qwen2 model directories."""

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


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped on CPU-only machines")
    config.addinivalue_line("markers", "slow: trains a model (a minute or more on two CPU cores)")


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
