"""core/batch_planning.py: the automatic batch is planned for the memory this process may still use."""

import torch

from mcqtune.data.questions import load_mcq_csv


def test_automatic_batch_respects_a_process_memory_cap(tiny_model_dir, sample_dir, monkeypatch):
    """A 139 GB card capped at 24 GiB for this process, 10 GiB already reserved: the batch is planned for the
    13 GiB left under the cap, not for the card's free memory (which once gave batch 128)."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from mcqtune.core import batch_planning
    from mcqtune.tiny.qwen import build_model_config

    gib = 2**30
    cuda = torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "current_device", lambda: 0)
    monkeypatch.setattr(cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=139 * gib))
    monkeypatch.setattr(cuda, "get_per_process_memory_fraction", lambda device: 24 / 139, raising=False)
    monkeypatch.setattr(cuda, "memory_reserved", lambda device: 10 * gib)
    monkeypatch.setattr(cuda, "mem_get_info", lambda device: (129 * gib, 139 * gib))
    assert abs(batch_planning.memory_budget_gb() - 13.0) < 1e-6
    assert abs(batch_planning.memory_budget_gb(requested_gb=16) - 5.0) < 1e-6  # --gpu_memory_gb 16

    monkeypatch.setattr(cuda, "memory_reserved", lambda device: 20 * gib)  # 3 GiB left: the rule, not the ceiling
    model = SimpleNamespace(config=build_model_config("qwen2.5-14b"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    frame = load_mcq_csv(sample_dir / "test.csv")
    args = SimpleNamespace(max_prompt_tokens=512, max_new_tokens=48, mode="score", gpu_memory_gb=None)
    from mcqtune.model.prompts import encode_prompts

    def longest(rows):
        return max(map(len, encode_prompts(tokenizer, rows, max_prompt_tokens=args.max_prompt_tokens)))

    capped = batch_planning.auto_batch_size(model, longest(frame), args)
    longer = frame.assign(question=frame["question"] * 30)  # up to the 512-token prompt limit
    assert capped & (capped - 1) == 0 and 1 <= capped <= batch_planning.MAX_AUTO_BATCH  # a power of two
    assert batch_planning.auto_batch_size(model, longest(longer), args) < capped  # longer prompts, smaller batches
    small = batch_planning.auto_batch_size(model, longest(frame),
                                           SimpleNamespace(**{**vars(args), "gpu_memory_gb": 22}))
    assert small < capped
    generate = batch_planning.auto_batch_size(model, longest(frame),
                                              SimpleNamespace(**{**vars(args), "mode": "generate"}))
    assert generate <= capped
