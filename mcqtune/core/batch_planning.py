"""How many questions go into one batch: the largest that the GPU memory left to this process holds."""

from __future__ import annotations

import logging
import math

from mcqtune.core.engines import INFER_REMEDIES, PAGED_ENGINES, Remedies

logger = logging.getLogger(__name__)

# Memory a question needs while it is scored, per prompt token: one layer's transients at a time (the MLP's
# up/gate activations, the residual stream, keys and values), times this margin for the allocator.
MEMORY_MARGIN = 1.5
GENERATION_MARGIN = 1.5  # what the generation model leaves out (Unsloth's buffers, allocator slack): bench/RESULTS.md
MAX_AUTO_BATCH = 128
CPU_BATCH = 16
# the continuous engine (continuous.py): its key/value cache, in blocks
# tokens a cache block holds: a reply wastes at most one partly filled block, so smaller blocks than transformers'
# 256 hold more replies; varlen attention reads token by token, so the size costs it nothing
CACHE_BLOCK_TOKENS = 64
CACHE_SHARE = 0.8  # of the memory left after loading; the rest is each step's transients (logits, CUDA graphs)
MAX_CONTINUOUS_BATCH = 512  # questions a checkpointed batch: a kill loses at most this many replies


def memory_budget_gb(requested_gb: float | None = None) -> float:
    """GPU memory this process may still use: the card's (or ``requested_gb``), within a per-process cap
    (``torch.cuda.set_per_process_memory_fraction``), minus what is already reserved and 1 GB of headroom."""
    import torch

    device = torch.cuda.current_device()
    total = torch.cuda.get_device_properties(device).total_memory
    getter = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    cap = total * (getter(device) if getter else 1.0)
    if requested_gb:
        cap = min(cap, requested_gb * 2**30)
    free = torch.cuda.mem_get_info(device)[0]
    usable = min(cap - torch.cuda.memory_reserved(device), free)
    return max(usable / 2**30 - 1.0, 0.0)


def scoring_bytes_per_token(config) -> int:
    """Scoring: one layer's transients at a time (the MLP's up/gate activations, the residual stream, keys and
    values); only the four letter rows of the output layer are computed."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 4 * (2 * kv_heads * head_dim * 2) + 6 * config.intermediate_size * 2 + 8 * config.hidden_size * 2


def generation_bytes_per_token(config) -> int:
    """Generation: the key/value cache of every layer for the prompt and the new tokens, plus the larger of one
    layer's transients and the prefill's logits over the whole vocabulary for every prompt position (the fast
    generation path computes them all). bench/RESULTS.md has the 14B measurement this model was fitted to."""
    return cache_bytes_per_token(config) + max(6 * config.intermediate_size * 2, config.vocab_size * 2)


def cache_bytes_per_token(config, kv_cache_dtype: str = "auto") -> int:
    """The key/value cache one token keeps in every layer (16-bit; ``kv_cache_dtype`` "fp8": 8-bit)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return config.num_hidden_layers * 2 * kv_heads * head_dim * (1 if kv_cache_dtype == "fp8" else 2)


def question_bytes(config, longest_prompt: int, args) -> tuple[float, int]:
    """(bytes one question of the longest batch needs, with the margin; the tokens it holds). A reasoning reply's
    tokens keep only their cache: the prefill's transients are the prompt's alone."""
    if args.mode == "reason":
        tokens = longest_prompt + args.max_reasoning_tokens
        return GENERATION_MARGIN * (longest_prompt * generation_bytes_per_token(config)
                                    + args.max_reasoning_tokens * cache_bytes_per_token(config)), tokens
    generate = args.mode == "generate"
    per_token = generation_bytes_per_token(config) if generate else scoring_bytes_per_token(config)
    tokens = longest_prompt + (args.max_new_tokens if generate else 0)
    return (GENERATION_MARGIN if generate else MEMORY_MARGIN) * per_token * tokens, tokens


def cache_blocks(model, gpu_memory_gb: float | None = None, kv_cache_dtype: str = "auto") -> int:
    """The cache blocks the continuous engine may take, in blocks of ``kv_cache_dtype``: ``CACHE_SHARE`` of the
    memory this process may still use, on a GPU within any per-process cap (which transformers' own sizing does
    not see), on a CPU of the RAM available now."""
    import psutil
    import torch

    if torch.cuda.is_available():
        budget = memory_budget_gb(gpu_memory_gb) * CACHE_SHARE * 2**30
    else:
        budget = psutil.virtual_memory().available * CACHE_SHARE
    return max(1, int(budget // (CACHE_BLOCK_TOKENS * cache_bytes_per_token(model.config, kv_cache_dtype))))


def reply_blocks(prompt_tokens: int, budget: int) -> int:
    """The blocks one reply of ``prompt_tokens`` + ``budget`` tokens can take: transformers' scheduler gives a
    prompt (prompt + 1) // block + 1 blocks, then one more whenever the reply fills its last; the last new token
    is not fed back, so it takes no room (with overlapped steps it is: ``planned_budget``)."""
    cached = prompt_tokens + budget - 1
    return max((prompt_tokens + 1) // CACHE_BLOCK_TOKENS + 1, math.ceil(cached / CACHE_BLOCK_TOKENS))


def planned_budget(budget: int, overlap: bool) -> int:
    """The new tokens a reply's cache must hold room for. With steps overlapped (transformers' async batching: the
    next step is prepared on the CPU while the GPU computes this one, which only a GPU does), a reply is scheduled
    once more before its last token is known, and that step caches the last token too."""
    return budget + 1 if overlap else budget


def replies_held(blocks: int, longest_prompt: int, budget: int, remedies: Remedies = INFER_REMEDIES,
                 overlap: bool = False) -> int:
    """Replies of ``longest_prompt`` + ``budget`` tokens that ``blocks`` hold at once, every one at its longest (when
    more run and the cache fills, transformers throws some replies' cache away and computes it again), with room
    for the step past the end if steps ``overlap``; refused, naming ``remedies``, when not one."""
    from mcqtune.errors import ConfigError

    held = blocks // reply_blocks(longest_prompt, planned_budget(budget, overlap))
    if held < 1:
        raise ConfigError(f"continuous batching: the key/value cache that fits in this machine's memory cannot hold "
                          f"one reply of {longest_prompt} prompt + {budget} new tokens; lower {remedies.budget} or use "
                          f"{remedies.fallback}")
    return held


def continuous_batch_size(model, longest_prompt: int, args) -> int:
    """The continuous engine's batch: twice the replies its cache holds at their longest, so that finished
    replies' places are taken by waiting questions."""
    import torch

    if not torch.cuda.is_available():
        return CPU_BATCH
    held = replies_held(cache_blocks(model, args.gpu_memory_gb, args.kv_cache_dtype), longest_prompt,
                        args.max_reasoning_tokens, overlap=args.async_batching)
    size = min(MAX_CONTINUOUS_BATCH, 2 * held)
    logger.info("continuous batching: %d questions a batch, the cache holds %d at %d tokens", size, held,
                longest_prompt + args.max_reasoning_tokens)
    return size


def auto_batch_size(model, longest_prompt: int, args) -> int:
    """The largest power of two whose longest batch (prompts of ``longest_prompt`` tokens; the first batch is the
    longest, so a misjudgement shows at once and is split by ``scoring.run_halving``) fits the memory budget."""
    import torch

    if getattr(args, "generation_engine", "generate") in PAGED_ENGINES:
        return continuous_batch_size(model, longest_prompt, args)
    if not torch.cuda.is_available():
        return CPU_BATCH
    needed, tokens = question_bytes(model.config, longest_prompt, args)
    budget = memory_budget_gb(args.gpu_memory_gb)
    fits = int(budget * 2**30 / needed)
    size = max(1, min(MAX_AUTO_BATCH, 2 ** max(0, fits.bit_length() - 1)))
    logger.info("batch size %d: %.1f GB usable, up to %d tokens a question, %.0f MB a question (%s)", size, budget,
                tokens, needed / 2**20, args.mode)
    return size
