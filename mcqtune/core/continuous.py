"""Reasoning replies through transformers' continuous batching (``--generation_engine continuous``).

``generate_batch`` keeps the key/value cache in fixed blocks (paged attention), starts a waiting question as soon as
a finished reply frees its blocks, packs prompts without padding, and replays each decoding step as a CUDA graph;
with ``--async_batching`` (varlen attention, a GPU) it prepares the next step while the current one computes.
Greedy replies are the ones ``model.generate`` gives (token for token in tests/core/test_continuous.py, on a
CPU; GPU kernels may differ, so the engine is part of a run's identity); what changes is the speed
(bench/RESULTS.md). The cache's size comes from batch_planning.py. Which options it needs is checked in setup.py:
the hf backend (Unsloth replaces the attention classes it runs), no repetition penalty (transformers drops that
processor from continuous batches), one process.
"""

from __future__ import annotations

import logging
from typing import Sequence

from mcqtune.core.engines import INFER_REMEDIES, Remedies

PREFILL_TOKENS = 2048  # prompt tokens computed in one step: bounds the step's logits (tokens x vocabulary)
BATCHING_LOGGER = "ContinuousBatchingLogger"  # transformers' own, which logs a line per CUDA graph


def continuous_replies(model, tokenizer, prompts: list[list[int]], budget: int, stop_ids: Sequence[int],
                       temperature: float = 0.0, seed: int | None = None, gpu_memory_gb: float | None = None,
                       max_replies: int | None = None, attention: str = "sdpa", top_p: float = 1.0,
                       top_k: int = 0, remedies: Remedies = INFER_REMEDIES,
                       kv_cache_dtype: str = "auto", async_batching: bool = False) -> list[list[int]]:
    """Each prompt's reply (at most ``budget`` tokens; a stop token, if reached, is its last), in prompt order;
    greedy, or sampled at ``temperature`` (within ``top_p`` / ``top_k``); at most ``max_replies`` decoding at once
    (the nf4 engine's kernel takes steps of that many tokens or fewer); ``attention`` "varlen": each reply attends
    to its own cache only (core/varlen.py); ``kv_cache_dtype`` "fp8": the cache kept in FP8 (varlen attention
    only: its kernel reads it back); ``async_batching``: on a GPU, with varlen, the next step prepared while this
    one computes. The cache takes no more blocks than these replies can fill. A refusal names the calling
    command's options (``remedies``)."""
    import contextlib

    import torch
    import transformers.generation.continuous_batching.requests  # noqa: F401  (gives BATCHING_LOGGER its handler)
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    from mcqtune.core.batch_planning import CACHE_BLOCK_TOKENS, cache_blocks, planned_budget, replies_held, reply_blocks
    from mcqtune.core.varlen import fp8_key_value_cache, varlen_paged_attention

    sampling = {"do_sample": True, "temperature": temperature, "top_k": top_k, "top_p": top_p} if temperature > 0 \
        else {"do_sample": False}
    config = GenerationConfig(max_new_tokens=budget, eos_token_id=list(stop_ids), pad_token_id=tokenizer.pad_token_id,
                              **sampling)
    cuda = torch.cuda.is_available()
    # async batching: the next step prepared while this one computes hides the CPU's share of a step, and a reply
    # may take one more token's room. Not with sdpa: each of the two sets of step buffers would hold its own dense
    # mask (transformers leaves it off there too); a CPU has no streams to overlap on
    if (kv_cache_dtype == "fp8" or async_batching) and attention != "varlen":  # refused in setup before
        raise ValueError("an FP8 key/value cache and async batching go with varlen attention only")
    if async_batching and not cuda:
        raise ValueError("async batching overlaps GPU steps; this machine has no CUDA GPU")
    blocks = min(sum(reply_blocks(len(p), planned_budget(budget, async_batching)) for p in prompts),
                 cache_blocks(model, gpu_memory_gb, kv_cache_dtype))
    # no more replies at once than the cache holds at their longest: transformers would otherwise admit more and,
    # when the cache fills, throw some replies' cache away and compute it again
    held = replies_held(blocks, max(map(len, prompts)), budget, remedies, async_batching)
    held = min(held, max_replies) if max_replies else held
    batching = ContinuousBatchingConfig(num_blocks=blocks, block_size=CACHE_BLOCK_TOKENS,
                                        max_batch_tokens=PREFILL_TOKENS, max_requests_per_batch=held,
                                        use_cuda_graph=cuda, seed=seed or 0, allow_block_sharing=False,
                                        use_async_batching=async_batching, cpu_offload_space=0)
    quiet = logging.getLogger(BATCHING_LOGGER)
    level, handlers, held = quiet.level, quiet.handlers[:], HeldRecords()
    quiet.setLevel(logging.WARNING)
    quiet.handlers = [held]  # in place of its console handler (transformers' logger does not propagate)
    interrupted = False
    try:  # transformers seeds torch's generators for the batch: the caller's stay as they were
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda else []), \
                (varlen_paged_attention(model, remedies.attention) if attention == "varlen"
                 else contextlib.nullcontext()), \
                (fp8_key_value_cache() if kv_cache_dtype == "fp8" else contextlib.nullcontext()):
            out = model.generate_batch(prompts, generation_config=config, continuous_batching_config=batching,
                                       warmup=cuda, progress_bar=False)
            return replies_in_order(out, prompts, remedies)  # a failed batch says why before varlen's own checks run
    except (KeyboardInterrupt, SystemExit):
        interrupted = True
        raise
    finally:
        quiet.setLevel(level)
        if interrupted:  # the background thread's teardown errors ("Error in generation loop" with a traceback)
            # say nothing the command's own line does not, and may come after this returns: the logger stays quiet
            quiet.handlers = [logging.NullHandler()]
        else:  # passed on as they came
            quiet.handlers = handlers
            for record in held.records:
                quiet.handle(record)


class HeldRecords(logging.Handler):
    """transformers' batching log, held until the batch ends."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def replies_in_order(out: dict, prompts: list[list[int]], remedies: Remedies = INFER_REMEDIES) -> list[list[int]]:
    """``generate_batch``'s results as each prompt's reply tokens, in prompt order; a request that failed raises
    (out of memory: what to change)."""
    from mcqtune.errors import UserError

    replies = []
    for i, prompt in enumerate(prompts):
        result = out.get(f"req_{i}")
        if result is None or list(result.prompt_ids) != list(prompt):
            raise RuntimeError(f"continuous batching returned no reply for prompt {i} of {len(prompts)}")
        if result.error and "out of memory" in result.error.lower():  # a smaller batch would not shrink the cache
            raise UserError(f"continuous batching ran out of GPU memory; {remedies.memory}, or use "
                            f"{remedies.fallback}")
        if result.error:
            raise RuntimeError(f"continuous batching failed on prompt {i}: {result.error}")
        replies.append(list(result.generated_tokens))
    return replies
