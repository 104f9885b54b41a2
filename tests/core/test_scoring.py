"""core/scoring.py: one-pass letter scoring equals the full model's logits; batching and out-of-memory
splitting."""

import pytest
import torch

from mcqtune.data.questions import load_mcq_csv
from mcqtune.model.prompts import encode_prompt
from mcqtune.core.scoring import (left_pad, length_sorted_batches, letter_logits, letter_token_ids, run_halving,
                     score_frame)


def test_letter_ids_are_single_tokens(qwen_tokenizer):
    assert letter_token_ids(qwen_tokenizer) == [qwen_tokenizer.convert_tokens_to_ids(x) for x in "ABCD"]


def test_batches_are_longest_first_and_cover_every_row_once():
    lengths = [5, 9, 1, 7, 3, 8, 2]
    batches = length_sorted_batches(lengths, 3)
    assert batches == [[1, 5, 3], [0, 4, 6], [2]]


def test_left_padding_puts_every_last_token_in_the_last_column():
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_out_of_memory_splits_the_batch_and_keeps_order():
    seen = []

    def compute(rows):
        seen.append(len(rows))
        if len(rows) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [r * 10 for r in rows]

    assert run_halving(compute, [1, 2, 3, 4, 5, 6, 7]) == [10, 20, 30, 40, 50, 60, 70]
    assert seen[0] == 7 and max(seen[1:]) <= 4

    def broken(rows):
        raise RuntimeError("some other failure")

    with pytest.raises(RuntimeError, match="other failure"):
        run_halving(broken, [1, 2])


def test_letter_logits_equal_the_full_forward_pass(tiny_model_dir, sample_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    frame = load_mcq_csv(sample_dir / "test.csv").head(5)
    prompts = [encode_prompt(tokenizer, row) for _, row in frame.iterrows()]
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    letters = letter_token_ids(tokenizer)
    with torch.no_grad():
        fast = letter_logits(model, ids, mask, letters)
        for i, prompt in enumerate(prompts):  # each prompt alone, no padding, full vocabulary
            full = model(torch.tensor([prompt])).logits[0, -1, letters]
            assert torch.allclose(fast[i], full, atol=1e-4), (fast[i], full)
    probs = score_frame(model, tokenizer, frame, batch_size=2)
    assert probs.shape == (5, 4) and torch.allclose(torch.tensor(probs).sum(1), torch.ones(5, dtype=torch.float64))
    assert (probs.argmax(1) == fast.argmax(1).numpy()).all()


def test_template_prefix_starts_every_prompt_and_ends_before_the_question(qwen_tokenizer, sample_dir):
    from mcqtune.core.scoring import SharedPrefix, template_prefix

    prefix = template_prefix(qwen_tokenizer)
    text = qwen_tokenizer.decode(prefix)
    assert text.startswith("<|im_start|>system\n") and text.endswith("问题：")
    frame = load_mcq_csv(sample_dir / "test.csv").head(8)
    prompts = [encode_prompt(qwen_tokenizer, row) for _, row in frame.iterrows()]
    assert all(p[:len(prefix)] == prefix for p in prompts)
    shared = SharedPrefix(qwen_tokenizer)
    assert shared.usable_length(prompts) == len(prefix)
    # A prompt without the prefix (a template that renders it otherwise) makes the batch run in full.
    assert shared.usable_length(prompts + [prompts[0][5:]]) == 0
    # A custom template without a system turn has its own, shorter prefix.
    from mcqtune.data.questions import PromptStyle

    style = PromptStyle(system_prompt=None, user_template="{question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}")
    assert len(template_prefix(qwen_tokenizer, style)) < len(prefix)


def _two_adapter_model(model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"],
                  init_lora_weights=False)  # random adapters, so they change the keys and values
    model = get_peft_model(model, LoraConfig(**config), adapter_name="first")
    model.add_adapter("second", LoraConfig(**config))
    return model.eval()


def test_shared_prefix_gives_the_probabilities_of_the_full_prompt(tiny_model_dir, sample_dir):
    import numpy as np

    from mcqtune.core.scoring import SharedPrefix, letter_probs, score_frame

    model = _two_adapter_model(tiny_model_dir)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    frame = load_mcq_csv(sample_dir / "test.csv").head(12)
    rows = list(range(12))
    orders = ((0, 1, 2, 3), (1, 2, 3, 0))
    full = letter_probs(model, tokenizer, frame, rows, orders=orders, adapters=("first", "second"))
    prefix = SharedPrefix(tokenizer)
    shared = letter_probs(model, tokenizer, frame, rows, orders=orders, adapters=("first", "second"), prefix=prefix)
    assert np.abs(full - shared).max() < 1e-5
    assert set(prefix._kv) == {"first", "second"}  # one prefix computation per adapter, reused across orders
    only_a = letter_probs(model, tokenizer, frame, rows, adapters=("first",), prefix=prefix)
    only_b = letter_probs(model, tokenizer, frame, rows, adapters=("second",), prefix=prefix)
    assert np.abs(only_a - only_b).max() > 1e-3  # the adapters differ, so a shared entry would show
    model.set_adapter("first")
    assert np.abs(score_frame(model, tokenizer, frame, batch_size=5, share_prefix=True)
                  - score_frame(model, tokenizer, frame, batch_size=5, share_prefix=False)).max() < 1e-5


def test_validation_shards_put_together_equal_the_unsharded_pass(tiny_model_dir, sample_dir):
    """Data-parallel validation: each rank scores every world-th length-sorted batch; the shards of all ranks
    cover every row once and give exactly the probabilities of one process scoring everything."""
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mcqtune.core.scoring import score_frame

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    frame = load_mcq_csv(sample_dir / "test.csv").head(23)
    whole = score_frame(model, tokenizer, frame, batch_size=4)
    shards = [score_frame(model, tokenizer, frame, batch_size=4, shard=(rank, 3)) for rank in range(3)]
    scored = [~np.isnan(s[:, 0]) for s in shards]
    assert (sum(m.astype(int) for m in scored) == 1).all()  # every row by exactly one rank
    assert all(0 < m.sum() < len(frame) for m in scored)
    combined = np.where(scored[0][:, None], shards[0], np.where(scored[1][:, None], shards[1], shards[2]))
    assert np.array_equal(combined, whole)
