"""Answer questions with one forward pass: compare the next-token logits of the letters A-D.

The prompt is the training prompt (``mcq_dataset.build_messages`` + the generation prompt), so the position
after it is exactly where the fine-tuned model writes its answer letter. Only that position's hidden state
goes through the output layer, and only the four letter rows of it: the full 152k-token vocabulary is never
computed, for any position.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from mcq_dataset import LETTERS, PromptStyle, cyclic_orders, encode_prompt, permute_options, unpermute_probs

logger = logging.getLogger(__name__)

# A batch that does not fit is retried at half the size, down to this many questions.
MIN_BATCH = 1


def letter_token_ids(tokenizer) -> list[int]:
    """Token ids of 'A'..'D' as the model writes them right after 'assistant\\n'."""
    ids = []
    for letter in LETTERS:
        encoded = tokenizer.encode(letter, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(f"the tokenizer splits the letter {letter!r} into {len(encoded)} tokens")
        ids.append(encoded[0])
    return ids


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches, longest first, so that each batch pads little and the first one shows memory trouble."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int):
    """Left padding puts every prompt's last token in the last column: one position to read for all rows."""
    import torch

    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        input_ids[i, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        attention_mask[i, width - len(seq):] = 1
    return input_ids, attention_mask


def decoder_and_head(model):
    """The transformer body (returns hidden states) and the output layer of a (PEFT-wrapped) causal LM."""
    head = model.get_output_embeddings()
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None or head is None:
        raise TypeError(f"{type(model).__name__} exposes no decoder/output layer to score letters with")
    return decoder, head


def model_device(model):
    return next(p.device for p in model.parameters())


def letter_logits(model, input_ids, attention_mask, letter_ids: Sequence[int]):
    """(batch, 4) logits of the letters at the last position; the output layer sees one row per question."""
    import torch

    decoder, head = decoder_and_head(model)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state[:, -1]
    weight = head.weight[list(letter_ids)]
    logits = hidden.to(weight.dtype) @ weight.T
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias[list(letter_ids)]
    return logits.float()


def _is_oom(err: BaseException) -> bool:
    return "out of memory" in str(err).lower() or type(err).__name__ == "OutOfMemoryError"


def run_halving(compute: Callable[[list[int]], list], batch: list[int]) -> list:
    """``compute(batch)`` returning one result per row; on out-of-memory the batch is split in two and each
    half retried (recursively), so a long run never dies on one oversized batch. Results keep row order."""
    try:
        return list(compute(batch))
    except RuntimeError as err:
        if not _is_oom(err) or len(batch) <= MIN_BATCH:
            raise
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = len(batch) // 2
        logger.warning("out of memory on a batch of %d; retrying as %d + %d", len(batch), half, len(batch) - half)
        return run_halving(compute, batch[:half]) + run_halving(compute, batch[half:])


def iter_letter_probs(model, tokenizer, prompts: Sequence[Sequence[int]], batch_size: int,
                      on_batch: Callable[[int], None] | None = None) -> Iterator[tuple[list[int], np.ndarray]]:
    """Yield (row indices, (n, 4) probabilities) batch by batch, longest prompts first.

    A batch that runs out of GPU memory is retried at half the size; the smaller size is kept.
    """
    import torch

    letter_ids = letter_token_ids(tokenizer)
    device = model_device(model)
    pending = length_sorted_batches([len(p) for p in prompts], batch_size)
    while pending:
        batch = pending.pop(0)
        input_ids, attention_mask = left_pad([prompts[i] for i in batch], tokenizer.pad_token_id)
        try:
            with torch.inference_mode():
                logits = letter_logits(model, input_ids.to(device), attention_mask.to(device), letter_ids)
        except RuntimeError as err:
            if not _is_oom(err) or len(batch) <= MIN_BATCH:
                raise
            torch.cuda.empty_cache()
            half = max(len(batch) // 2, MIN_BATCH)
            logger.warning("out of GPU memory at batch size %d; retrying at %d", len(batch), half)
            rest = [i for b in pending for i in b]
            pending = [batch[:half], batch[half:]] + [rest[j:j + half] for j in range(0, len(rest), half)]
            continue
        if on_batch:
            on_batch(len(batch))
        yield batch, torch.softmax(logits, dim=-1).cpu().numpy()


def score_frame(model, tokenizer, frame: pd.DataFrame, style: PromptStyle = PromptStyle(), batch_size: int = 16,
                max_prompt_tokens: int | None = 512, permutations: int = 1) -> np.ndarray:
    """(n, 4) letter probabilities for every row, in row order; averaged over ``permutations`` cyclic
    reorderings of the options (mapped back to the original options) when more than 1."""
    was_training = model.training
    model.eval()
    total = np.zeros((len(frame), 4))
    for order in cyclic_orders(permutations):
        rows = [permute_options(row, order) for _, row in frame.iterrows()]
        prompts = [encode_prompt(tokenizer, row, style, max_prompt_tokens) for row in rows]
        for indices, probs in iter_letter_probs(model, tokenizer, prompts, batch_size):
            for i, p in zip(indices, probs):
                total[i] += unpermute_probs(p, order)
    if was_training:
        model.train()
    return total / permutations


def letters_from_probs(probs: np.ndarray) -> list[str]:
    return [LETTERS[i] for i in np.asarray(probs).argmax(axis=1)]


def accuracy(predicted: Sequence[str], expected: Sequence[str]) -> float:
    return float(np.mean([p == e for p, e in zip(predicted, expected)])) if len(expected) else float("nan")


class Throughput:
    """Questions per second over a run, for progress bars and the report."""

    def __init__(self):
        self.start, self.count = time.perf_counter(), 0

    def add(self, n: int) -> None:
        self.count += n

    @property
    def per_second(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.count / elapsed if elapsed > 0 else 0.0
