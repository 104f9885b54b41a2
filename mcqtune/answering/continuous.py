"""Reasoning replies through transformers' continuous batching (``--generation_engine continuous``).

``generate_batch`` keeps the key/value cache in fixed blocks (paged attention), starts a waiting question as soon as
a finished reply frees its blocks, packs prompts without padding, and replays each decoding step as a CUDA graph.
The replies are the ones ``model.generate`` would give (greedy: the same tokens; tests/answering/test_continuous.py);
what changes is the speed (bench/RESULTS.md). It runs the model's own attention classes, so it needs the hf backend
(Unsloth replaces them), and it has no repetition penalty (transformers drops that processor from continuous batches,
so it is refused here rather than silently left out).
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

logger = logging.getLogger(__name__)

ENGINES = ("generate", "continuous")
BLOCK_SIZE = 256        # tokens per cache block
PREFILL_TOKENS = 2048   # prompt tokens computed in one step
CACHE_SHARE = 0.8       # of the memory left after loading: the rest is the steps' transients (logits, graphs)
MAX_ROWS_PER_CALL = 512


def engine_problems(engine: str, mode: str, repetition_penalty: float) -> list[str]:
    """What is wrong with ``--generation_engine`` for these options (the backend is checked when it is chosen)."""
    if engine not in ENGINES:
        return [f"generation_engine must be one of {', '.join(ENGINES)}, got {engine!r}"]
    if engine == "continuous" and mode != "reason":
        return [f"generation_engine continuous applies to reason mode only, not {mode}"]
    if engine == "continuous" and repetition_penalty != 1.0:
        return [f"generation_engine continuous has no repetition penalty (transformers' continuous batching drops "
                f"it): pass --repetition_penalty 1.0, or --generation_engine generate to keep {repetition_penalty}"]
    return []


def cache_blocks(model, tokens_needed: int, gpu_memory_gb: float | None = None) -> int:
    """Cache blocks: on a GPU, ``CACHE_SHARE`` of the memory this process may still use (within any per-process
    cap, which transformers' own sizing does not see); on a CPU, enough for ``tokens_needed``."""
    import torch

    from mcqtune.answering.batch_planning import cache_bytes_per_token, memory_budget_gb

    if not torch.cuda.is_available():
        return math.ceil(tokens_needed / BLOCK_SIZE) + 1
    budget = memory_budget_gb(gpu_memory_gb) * CACHE_SHARE * 2**30
    return max(1, int(budget // (BLOCK_SIZE * cache_bytes_per_token(model.config))))


def rows_per_call(model, longest_prompt: int, budget: int, gpu_memory_gb: float | None = None) -> int:
    """Questions handed to one ``generate_batch`` (one checkpointed batch of infer.py): twice the replies the cache
    holds at their longest, so that finished replies' places are taken by waiting questions."""
    import torch

    from mcqtune.answering.batch_planning import CPU_BATCH

    if not torch.cuda.is_available():
        return CPU_BATCH
    held = cache_blocks(model, 0, gpu_memory_gb) * BLOCK_SIZE // (longest_prompt + budget)
    if held < 1:
        from mcqtune.errors import ConfigError

        raise ConfigError(f"generation_engine continuous: the key/value cache that fits in this GPU's memory cannot "
                          f"hold one reply of {longest_prompt} prompt + {budget} reasoning tokens; lower "
                          f"--max_reasoning_tokens or use --generation_engine generate")
    size = min(MAX_ROWS_PER_CALL, 2 * held)
    logger.info("continuous batching: %d questions a batch, the cache holds %d at %d tokens", size, held,
                longest_prompt + budget)
    return size


def continuous_replies(model, tokenizer, prompts: list[list[int]], budget: int, stop_ids: Sequence[int],
                       temperature: float = 0.0, seed: int | None = None,
                       gpu_memory_gb: float | None = None) -> list[list[int]]:
    """Each prompt's reply (at most ``budget`` tokens; a stop token, if reached, is its last), in prompt order."""
    import torch
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 \
        else {"do_sample": False}
    config = GenerationConfig(max_new_tokens=budget, eos_token_id=list(stop_ids), pad_token_id=tokenizer.pad_token_id,
                              **sampling)
    cuda = torch.cuda.is_available()
    blocks = cache_blocks(model, sum(len(p) + budget for p in prompts), gpu_memory_gb)
    # no more replies at once than the cache holds at their longest: transformers would otherwise admit more and,
    # when the cache fills, throw some replies' cache away and compute them again
    held = max(1, blocks * BLOCK_SIZE // (max(map(len, prompts)) + budget))
    batching = ContinuousBatchingConfig(num_blocks=blocks, block_size=BLOCK_SIZE, max_batch_tokens=PREFILL_TOKENS,
                                        max_requests_per_batch=held, use_cuda_graph=cuda, seed=seed or 0,
                                        allow_block_sharing=False)
    logging.getLogger("ContinuousBatchingLogger").setLevel(logging.WARNING)  # not a line per CUDA graph
    out = model.generate_batch(prompts, generation_config=config, continuous_batching_config=batching,
                               warmup=cuda, progress_bar=False)
    replies = []
    for i, prompt in enumerate(prompts):
        result = out.get(f"req_{i}")
        if result is None or list(result.prompt_ids) != list(prompt):
            raise RuntimeError(f"continuous batching returned no reply for prompt {i} of {len(prompts)}")
        if result.error:
            if "out of memory" in result.error.lower():
                raise torch.OutOfMemoryError(result.error)  # infer.py's batches split on it
            raise RuntimeError(f"continuous batching failed on prompt {i}: {result.error}")
        replies.append(list(result.generated_tokens))
    return replies
