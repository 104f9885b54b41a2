"""scoring: one-pass letter scoring equals the full model's logits; batching and out-of-memory splitting."""

import pytest
import torch

from mcq_dataset import encode_prompt, load_mcq_csv
from scoring import (left_pad, length_sorted_batches, letter_logits, letter_token_ids, run_halving,
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
