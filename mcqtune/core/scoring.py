"""Answer questions with one forward pass: compare the next-token logits of the letters A-D.

The prompt is the training prompt (``mcq_dataset.build_messages`` + the generation prompt), so the position
after it is exactly where the fine-tuned model writes its answer letter. Only that position's hidden state
goes through the output layer, and only the four letter rows of it: the full 152k-token vocabulary is never
computed, for any position.

Every prompt starts with the same tokens (chat markup, system prompt, the instruction before the question):
a large share of a typical prompt (bench/RESULTS.md). ``SharedPrefix`` runs them through the model once per
adapter and hands their keys and values to every batch, which then computes only the question-specific rest.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from mcqtune.runs.distributed import shard as shard_of
from mcqtune.data.questions import LETTERS, PromptStyle
from mcqtune.model.prompts import encode_prompt, encode_prompts
from mcqtune.model.loading import is_out_of_memory
from mcqtune.data.option_orders import cyclic_orders, permute_options

logger = logging.getLogger(__name__)

# A batch that does not fit is retried at half the size, down to this many questions.
MIN_BATCH = 1


def letter_token_ids(tokenizer, style: PromptStyle = PromptStyle()) -> list[int]:
    """Token ids of 'A'..'D' as the chat template puts them right after the prompt (prompts.py)."""
    from mcqtune.model.prompts import find_answer_slot

    return list(find_answer_slot(tokenizer, style).letter_ids)


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
    """Where a batch goes: the first weight on an accelerator, else the CPU. Unsloth's offload_embedding keeps the
    input embedding (the first weight) in host memory while every layer computes on the GPU."""
    first = None
    for parameter in model.parameters():
        if parameter.device.type != "cpu":
            return parameter.device
        first = first or parameter.device
    return first


def letter_logits(model, input_ids, attention_mask, letter_ids: Sequence[int]):
    """(batch, 4) logits of the letters at the last position; the output layer sees one row per question."""
    decoder, head = decoder_and_head(model)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state[:, -1]
    return finish_logits(model, head_rows(hidden, head, letter_ids))


def head_rows(hidden, head, letter_ids: Sequence[int]):
    weight = head.weight[list(letter_ids)]
    logits = hidden.to(weight.dtype) @ weight.T
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias[list(letter_ids)]
    return logits.float()


def finish_logits(model, logits):
    """What the model's own forward does to the output layer's logits, which scores and the answer loss read
    directly: MiniCPM3's and Granite's division by ``logits_scaling``, Cohere's ``logit_scale``, Gemma 2's final
    soft-capping (cap * tanh(logits / cap)). Each family's tiny model checks its scores against its forward."""
    import torch

    config = getattr(model, "config", None)
    scaling = getattr(config, "logits_scaling", None)
    if scaling and scaling != 1:
        logits = logits / scaling
    scale = getattr(config, "logit_scale", None)
    if isinstance(scale, (int, float)) and scale != 1:
        logits = logits * scale
    cap = getattr(config, "final_logit_softcapping", None)
    return logits if not cap else torch.tanh(logits / cap) * cap


def keeps_keys_values(model) -> bool:
    """Whether every layer keeps keys and values that a later batch can read as its start. Qwen3.5's
    linear-attention layers keep a recurrent state instead: such a model computes every prompt whole."""
    kinds = getattr(getattr(model, "config", None), "layer_types", None) or ()
    return all(kind in ("full_attention", "sliding_attention") for kind in kinds)


def prefix_sharing(model, share_prefix: bool) -> str:
    """How the template prefix was computed, for report.json."""
    if not share_prefix:
        return "off (--share_prefix false)"
    if not keeps_keys_values(model):
        return "off: some layers keep a recurrent state, not keys and values, so every prompt is computed whole"
    return "on"


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def template_prefix(tokenizer, style: PromptStyle = PromptStyle()) -> list[int]:
    """The tokens every prompt of ``style`` starts with: the common start of two prompts that share nothing
    but the template (taken on token ids, so a merge across the template/question border is excluded)."""
    rows = [{"question": q, **{f"option_{x}": f"{q}{x}" for x in LETTERS}} for q in ("甲", "乙")]
    first, second = (encode_prompt(tokenizer, row, style) for row in rows)
    return first[:common_prefix_length(first, second)]


class SharedPrefix:
    """Keys and values of the template prefix, computed once per adapter and reused by every batch.

    Only causal attention is involved, so the prefix's keys and values do not depend on what follows it:
    the letter logits are those of the full prompt (``tests/test_scoring.py`` checks it on both backends).
    Create one per scoring run; its entries belong to the adapter weights of that moment.
    """

    MIN_TOKENS = 8  # shorter shared starts are not worth a second code path

    def __init__(self, tokenizer, style: PromptStyle = PromptStyle()):
        self.tokens = template_prefix(tokenizer, style)
        self._kv: dict = {}

    def usable_length(self, sequences: Sequence[Sequence[int]]) -> int:
        """Prefix tokens all ``sequences`` start with, leaving at least one own token each (0: don't use)."""
        length = min(min(common_prefix_length(s, self.tokens), len(s) - 1) for s in sequences)
        return length if length >= self.MIN_TOKENS else 0

    def keys_values(self, model, adapter) -> tuple[list, bool]:
        """[(keys, values)] per layer for the whole template prefix, and whether the decoder wants a Cache."""
        if adapter not in self._kv:
            import torch

            decoder, _ = decoder_and_head(model)
            ids = torch.tensor([self.tokens], device=model_device(model))
            cache = decoder(input_ids=ids, use_cache=True).past_key_values
            if hasattr(cache, "layers"):  # a transformers Cache object
                self._kv[adapter] = ([(layer.keys, layer.values) for layer in cache.layers], True)
            else:  # Unsloth's forward keeps the legacy tuple of (keys, values) per layer
                self._kv[adapter] = ([(k, v) for k, v in cache], False)
        return self._kv[adapter]

    def past_for(self, model, adapter, length: int, batch: int):
        """The first ``length`` prefix positions, broadcast to ``batch`` rows, as the decoder takes them."""
        layers, as_cache = self.keys_values(model, adapter)
        past = [(k[:, :, :length].expand(batch, -1, -1, -1), v[:, :, :length].expand(batch, -1, -1, -1))
                for k, v in layers]
        if as_cache:
            return _read_only_cache_class()(ddp_cache_data=past)
        return tuple(past)


@functools.lru_cache(maxsize=1)
def _read_only_cache_class():
    """A transformers cache that holds the prefix and is read by every layer but never extended: each layer's
    keys and values for the batch are built, used and freed, instead of all layers' being kept until the
    forward ends (at the 14B shape and a full batch, gigabytes of its memory)."""
    import torch
    from transformers import DynamicCache

    class ReadOnlyPrefixCache(DynamicCache):
        def update(self, key_states, value_states, layer_idx, *args, **kwargs):
            layer = self.layers[layer_idx]
            return torch.cat([layer.keys, key_states], dim=-2), torch.cat([layer.values, value_states], dim=-2)

    return ReadOnlyPrefixCache


def right_pad(sequences: Sequence[Sequence[int]], pad_id: int):
    import torch

    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for i, seq in enumerate(sequences):
        input_ids[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    return input_ids


def letter_logits_after_prefix(model, prefix: SharedPrefix, adapter, sequences: Sequence[Sequence[int]],
                               length: int, letter_ids: Sequence[int], pad_id: int):
    """(batch, 4) letter logits of full prompts whose first ``length`` tokens are the cached prefix: only the
    rest is computed. Rows are right-padded, so every position of the rest sits at the same place."""
    import torch

    device = model_device(model)
    rests = [s[length:] for s in sequences]
    input_ids = right_pad(rests, pad_id).to(device)
    batch, width = input_ids.shape
    own = torch.tensor([len(r) for r in rests], device=device)
    attention_mask = torch.ones((batch, length + width), dtype=torch.long, device=device)
    attention_mask[:, length:] = (torch.arange(width, device=device)[None] < own[:, None]).long()
    position_ids = torch.arange(length, length + width, device=device)[None].expand(batch, -1)
    decoder, head = decoder_and_head(model)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                     past_key_values=prefix.past_for(model, adapter, length, batch), use_cache=False).last_hidden_state
    hidden = hidden[torch.arange(batch, device=device), own - 1]
    return finish_logits(model, head_rows(hidden, head, letter_ids))


def run_halving(compute: Callable[[list[int]], list], batch: list[int]) -> list:
    """``compute(batch)`` returning one result per row; on out-of-memory the batch is split in two and each
    half retried (recursively), so a long run never dies on one oversized batch. Results keep row order.

    The retry runs after the ``except`` block has ended: inside it, the exception's traceback would still hold
    the failed attempt's frames and with them its GPU tensors, and the halves would run short of that memory."""
    try:
        return list(compute(batch))
    except RuntimeError as err:
        if not is_out_of_memory(err) or len(batch) <= MIN_BATCH:
            raise
        message = str(err).splitlines()[0][:200]
    free_cached_memory()
    half = len(batch) // 2
    logger.warning("out of memory on a batch of %d (%s); retrying as %d + %d", len(batch), message, half,
                   len(batch) - half)
    return run_halving(compute, batch[:half]) + run_halving(compute, batch[half:])


def free_cached_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def position_probs(model, tokenizer, frame: pd.DataFrame, rows: Sequence[int], style: PromptStyle = PromptStyle(),
                   max_prompt_tokens: int | None = 512, orders: Sequence[tuple[int, ...]] = ((0, 1, 2, 3),),
                   adapters: Sequence[str | None] = (None,), prompts: Sequence[Sequence[int]] | None = None,
                   prefix: SharedPrefix | None = None) -> np.ndarray:
    """(len(orders), len(rows), 4) probabilities of the letters *as shown* for ``frame.iloc[rows]`` under each
    option order (``option_orders.permute_options``), averaged over PEFT ``adapters`` (None: the active one).
    ``prompts`` may hold the already encoded prompts of the original order, so they are not tokenised twice.
    With ``prefix`` the shared template prefix is computed once (per adapter) instead of once per question."""
    import torch

    letter_ids = letter_token_ids(tokenizer, style)
    device = model_device(model)
    total = np.zeros((len(orders), len(rows), 4))
    for k, order in enumerate(orders):  # each order's prompts are encoded once, whatever the number of adapters
        if prompts is not None and tuple(order) == (0, 1, 2, 3):
            seqs = [prompts[i] for i in rows]
        else:
            seqs = [encode_prompt(tokenizer, permute_options(frame.iloc[i], order), style, max_prompt_tokens)
                    for i in rows]
        length = prefix.usable_length(seqs) if prefix is not None else 0
        for name in adapters:
            if name is not None:
                model.set_adapter(name)
            with torch.inference_mode():
                if length:
                    logits = letter_logits_after_prefix(model, prefix, name, seqs, length, letter_ids,
                                                        tokenizer.pad_token_id)
                else:
                    input_ids, attention_mask = left_pad(seqs, tokenizer.pad_token_id)
                    logits = letter_logits(model, input_ids.to(device), attention_mask.to(device), letter_ids)
            total[k] += torch.softmax(logits, dim=-1).cpu().numpy()
    return total / len(adapters)


def combine_orders(per_order: np.ndarray, orders: Sequence[tuple[int, ...]], prior=None) -> np.ndarray:
    """Per-order position probabilities -> probabilities of the original options, averaged over the orders;
    with a letter ``prior`` (letter_bias.py) each order's positions are first divided by it."""
    from mcqtune.core.letter_bias import debias

    if prior is not None:
        per_order = debias(per_order, prior)
    original = np.empty_like(per_order)
    for k, order in enumerate(orders):  # position i showed option order[i] (option_orders.unpermute_probs, per row)
        original[k][:, list(order)] = per_order[k]
    return original.mean(axis=0)


def letter_probs(model, tokenizer, frame: pd.DataFrame, rows: Sequence[int], style: PromptStyle = PromptStyle(),
                 max_prompt_tokens: int | None = 512, orders: Sequence[tuple[int, ...]] = ((0, 1, 2, 3),),
                 adapters: Sequence[str | None] = (None,), prompts: Sequence[Sequence[int]] | None = None,
                 prefix: SharedPrefix | None = None) -> np.ndarray:
    """(len(rows), 4) letter probabilities of ``frame.iloc[rows]``, averaged over option ``orders`` (mapped back
    to the original options) and over PEFT ``adapters``."""
    return combine_orders(position_probs(model, tokenizer, frame, rows, style, max_prompt_tokens, orders, adapters,
                                         prompts, prefix), orders)


def batch_scorer(model, tokenizer, frame: pd.DataFrame, style: PromptStyle = PromptStyle(),
                 max_prompt_tokens: int | None = 512, orders: Sequence[tuple[int, ...]] = ((0, 1, 2, 3),),
                 adapters: Sequence[str | None] = (None,), share_prefix: bool = True,
                 prompts: Sequence[Sequence[int]] | None = None, per_order: bool = False):
    """The encoded prompts of ``frame`` and ``compute(rows) -> (len(rows), 4) probabilities``: the one scoring
    set-up behind infer.py's score mode and ``score_frame`` (validation accuracy, generate-mode fallback).
    ``prompts`` may hold the prompts already encoded with the same style and limit. With ``per_order`` compute
    returns the (orders, rows, 4) position probabilities instead (``combine_orders`` averages them)."""
    if prompts is None:
        prompts = encode_prompts(tokenizer, frame, style, max_prompt_tokens)
    prefix = SharedPrefix(tokenizer, style) if share_prefix and keeps_keys_values(model) else None

    def compute(rows: list[int]) -> np.ndarray:
        found = position_probs(model, tokenizer, frame, rows, style, max_prompt_tokens, orders, adapters, prompts,
                               prefix)
        return found if per_order else combine_orders(found, orders)

    return prompts, compute


def estimate_prior(compute_per_order, rows: Sequence[int], batch_size: int) -> np.ndarray:
    """The letter prior (letter_bias.estimate_letter_prior) from the four cyclic orders of ``rows``, where
    ``compute_per_order`` is a ``batch_scorer(..., orders=cyclic_orders(4), per_order=True)`` compute."""
    from mcqtune.core.letter_bias import estimate_letter_prior

    parts = [compute_per_order(list(rows[i:i + batch_size])) for i in range(0, len(rows), batch_size)]
    return estimate_letter_prior(np.concatenate(parts, axis=1), cyclic_orders(4))


def score_frame(model, tokenizer, frame: pd.DataFrame, style: PromptStyle = PromptStyle(), batch_size: int = 16,
                max_prompt_tokens: int | None = 512, permutations: int = 1, share_prefix: bool = True,
                shard: tuple[int, int] = (0, 1)) -> np.ndarray:
    """(n, 4) letter probabilities for every row, in row order; averaged over ``permutations`` cyclic
    reorderings of the options (mapped back to the original options) when more than 1.

    ``shard=(rank, world)``: only every world-th of the length-sorted batches, starting at ``rank``, is scored
    and the other rows are NaN. The batches do not depend on ``world``, so the shards of all ranks put together
    equal the unsharded result."""
    was_training = model.training
    model.eval()
    prompts, compute = batch_scorer(model, tokenizer, frame, style, max_prompt_tokens, cyclic_orders(permutations),
                                    share_prefix=share_prefix)
    total = np.full((len(frame), 4), np.nan)
    for batch in shard_of(length_sorted_batches([len(p) for p in prompts], batch_size), *shard):
        total[batch] = run_halving(compute, batch)
    if was_training:
        model.train()
    return total


def letters_from_probs(probs: np.ndarray) -> list[str]:
    return [LETTERS[i] for i in np.asarray(probs).argmax(axis=1)]


def accuracy(predicted: Sequence[str], expected: Sequence[str]) -> float:
    return float(np.mean([p == e for p, e in zip(predicted, expected)])) if len(expected) else float("nan")
