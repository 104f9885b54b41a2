"""Attention made for decoding (``--paged_attention varlen``): each reply's queries read only its own cache.

transformers' paged SDPA path (``paged|sdpa``) puts every reply of a continuous-batching step into one attention
call: it copies the whole cache of the step with each key/value head repeated for its query heads, and attends
every query to every cached token through a dense mask that keeps its own: about half of a decoding step at the
14B shape (profiled in bench/RESULTS.md, session 18), growing with the number of replies twice over.

``varlen_attention`` is one Triton kernel over the packed step instead: a program per query token and key/value
head finds the token's reply in the cumulative lengths, reads that reply's keys and values once for the whole
group of query heads that share them (grouped-query attention without copies), where they lie in the paged cache
(through the step's read index: no packed copy of the cache either), and keeps a running softmax (causal,
aligned to the end of the reply). It is registered with transformers as the attention implementation
``paged|mcq_varlen`` for the time of a ``generate_batch`` (``varlen_paged_attention``), and reads the cache through
``PagedAttentionCache``'s attributes (``key_cache``, ``value_cache``, ``layer_index_to_group_indices``,
``sliding_windows``) as transformers 5.17 lays them out; the CPU tests run through them. Without a CUDA GPU the
same arithmetic runs per reply in torch (``reference_attention``), which is what the CPU tests compare the kernel
with (under Triton's interpreter) and what a CPU run computes. Nothing needs compiling before a step is captured
as a CUDA graph: transformers runs each step once uncaptured first (``ModelRunner._capture_graph``), which compiles
the kernel's variant for it.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch

from mcqtune.core.engines import interpreting
from mcqtune.errors import ConfigError

IMPLEMENTATION = "paged|mcq_varlen"  # no "flash" in it: transformers would look for flash-attn's kernels
SEARCH_STEPS = 12  # a token's reply is found by bisection over at most 2**12 - 1 replies a step
MAX_REPLIES_A_STEP = 2**SEARCH_STEPS - 1
BLOCK_KEYS = 64  # keys read per step of the kernel's loop
_calls = {"attention": 0}  # calls while installed, as Python saw them (a step replayed as a CUDA graph: once)


@functools.cache
def _kernel(interpret: bool):
    """The Triton kernel, defined at first use (under Triton's interpreter when TRITON_INTERPRET=1 was set before
    Triton was first imported: tests/core/interpreted_varlen.py)."""
    import triton
    import triton.language as tl

    @triton.jit(do_not_specialize=["num_seqs"])
    def varlen_attention_kernel(q_ptr, k_ptr, v_ptr, rows_ptr, out_ptr, cu_q_ptr, cu_k_ptr, num_seqs, scale,
                                stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot,
                                stride_oh, GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
                                DIM_PAD: tl.constexpr, BLOCK: tl.constexpr, STEPS: tl.constexpr,
                                PRECISION: tl.constexpr, INDEXED: tl.constexpr):
        token, kv_head = tl.program_id(0), tl.program_id(1)
        # the reply this token belongs to: the last one whose queries start at or before it (bisection)
        low = token * 0
        high = low + num_seqs
        for _ in tl.static_range(STEPS):
            middle = (low + high) // 2
            before = tl.load(cu_q_ptr + middle).to(tl.int32) <= token
            low = tl.where(before, middle, low)
            high = tl.where(before, high, middle)
        q_start = tl.load(cu_q_ptr + low).to(tl.int32)
        q_length = tl.load(cu_q_ptr + low + 1).to(tl.int32) - q_start
        k_start = tl.load(cu_k_ptr + low).to(tl.int32)
        k_length = tl.load(cu_k_ptr + low + 1).to(tl.int32) - k_start
        # causal, aligned to the reply's end: its query i sees keys up to k_length - q_length + i; a token past the
        # last reply (a padded step) sees none
        last = tl.where(token < tl.load(cu_q_ptr + num_seqs).to(tl.int32), k_length - q_length + token - q_start,
                        -1)
        heads = kv_head * GROUP + tl.arange(0, GROUP_PAD)
        head_ok = tl.arange(0, GROUP_PAD) < GROUP
        dims = tl.arange(0, DIM_PAD)
        dim_ok = dims < HEAD_DIM
        query = tl.load(q_ptr + token * stride_qt + heads[:, None] * stride_qh + dims[None, :],
                        mask=head_ok[:, None] & dim_ok[None, :], other=0)
        best = tl.full((GROUP_PAD,), float("-inf"), tl.float32)
        total = tl.zeros((GROUP_PAD,), tl.float32)
        acc = tl.zeros((GROUP_PAD, DIM_PAD), tl.float32)
        for start in range(0, last + 1, BLOCK):
            keys = start + tl.arange(0, BLOCK)
            key_ok = keys <= last
            if INDEXED:  # the cache's own rows, read where they lie (no packed copy)
                rows = tl.load(rows_ptr + k_start + keys, mask=key_ok, other=0)[:, None]
            else:
                rows = (k_start + keys)[:, None]
            keep = key_ok[:, None] & dim_ok[None, :]
            # a cache kept in another type (FP8) is read in the queries'; masked lanes are zeroed after the load,
            # as Triton cannot cast a fill value to an 8-bit float
            key = tl.where(keep, tl.load(k_ptr + rows * stride_kt + kv_head * stride_kh + dims[None, :],
                                         mask=keep).to(query.dtype), 0)
            scores = tl.dot(query, tl.trans(key), input_precision=PRECISION) * scale
            scores = tl.where(key_ok[None, :], scores, float("-inf"))
            new_best = tl.maximum(best, tl.max(scores, 1))
            weights = tl.exp(scores - new_best[:, None])
            shrink = tl.exp(best - new_best)
            total = total * shrink + tl.sum(weights, 1)
            value = tl.where(keep, tl.load(v_ptr + rows * stride_vt + kv_head * stride_vh + dims[None, :],
                                           mask=keep).to(query.dtype), 0)
            acc = acc * shrink[:, None] + tl.dot(weights.to(query.dtype), value, input_precision=PRECISION)
            best = new_best
        out = acc / tl.where(total > 0, total, 1.0)[:, None]
        tl.store(out_ptr + token * stride_ot + heads[:, None] * stride_oh + dims[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=head_ok[:, None] & dim_ok[None, :])

    return varlen_attention_kernel


def varlen_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_q: torch.Tensor,
                     cu_k: torch.Tensor, scale: float, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Causal attention of packed replies: ``query`` (tokens, heads, dim), ``key``/``value`` (keys, kv_heads, dim),
    reply i's queries at ``cu_q[i]:cu_q[i+1]`` and its keys at ``cu_k[i]:cu_k[i+1]`` (its queries are its last
    tokens); heads share key/value heads in groups. With ``rows``, packed key j is ``key[rows[j]]`` (a paged
    cache read in place). Tokens past ``cu_q[-1]`` (padding) get zeros. The Triton kernel on a CUDA GPU (or under
    the interpreter), ``reference_attention`` otherwise."""
    if not (query.is_cuda or interpreting()):
        if rows is not None:
            key, value = key.index_select(0, rows), value.index_select(0, rows)
        return reference_attention(query, key.to(query.dtype), value.to(query.dtype), cu_q, cu_k, scale)
    tokens, heads, dim = query.shape
    kv_heads = key.shape[1]
    num_seqs = cu_q.shape[0] - 1
    # continuous batching never passes these (its steps hold at most PREFILL_TOKENS replies; heads are checked by
    # varlen_problem before the first step): a failure here is this code's, not the user's
    if heads % kv_heads or num_seqs > MAX_REPLIES_A_STEP or (query.stride(-1), key.stride(-1), value.stride(-1)) \
            != (1, 1, 1):
        raise ValueError(f"varlen_attention: {heads} query heads over {kv_heads} key/value heads, {num_seqs} replies "
                         f"a step (at most {MAX_REPLIES_A_STEP}), last strides {query.stride(-1)}, {key.stride(-1)}, "
                         f"{value.stride(-1)} (must be 1)")
    out = torch.empty((tokens, heads, dim), device=query.device, dtype=query.dtype)
    group = heads // kv_heads
    _kernel(interpreting())[(tokens, kv_heads)](
        query, key, value, cu_q if rows is None else rows, out, cu_q, cu_k, num_seqs, scale, query.stride(0),
        query.stride(1), key.stride(0), key.stride(1), value.stride(0), value.stride(1), out.stride(0), out.stride(1),
        GROUP=group, GROUP_PAD=max(16, 1 << (group - 1).bit_length()), HEAD_DIM=dim,
        DIM_PAD=max(16, 1 << (dim - 1).bit_length()),
        BLOCK=BLOCK_KEYS, STEPS=SEARCH_STEPS, PRECISION="ieee" if query.dtype == torch.float32 else "tf32",
        INDEXED=rows is not None)
    return out


def reference_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_q: torch.Tensor,
                        cu_k: torch.Tensor, scale: float) -> torch.Tensor:
    """``varlen_attention``'s arithmetic, reply by reply, with torch's SDPA (grouped-query heads, the causal mask
    aligned to each reply's end)."""
    out = torch.zeros_like(query)
    bounds_q, bounds_k = cu_q.tolist(), cu_k.tolist()
    for i in range(len(bounds_q) - 1):
        q_start, q_end, k_start, k_end = bounds_q[i], bounds_q[i + 1], bounds_k[i], bounds_k[i + 1]
        if q_end == q_start:
            continue
        seen = torch.arange(k_end - k_start, device=query.device)[None, :] <= \
            (k_end - k_start - (q_end - q_start) + torch.arange(q_end - q_start, device=query.device))[:, None]
        attended = torch.nn.functional.scaled_dot_product_attention(
            query[q_start:q_end].transpose(0, 1)[None], key[k_start:k_end].transpose(0, 1)[None],
            value[k_start:k_end].transpose(0, 1)[None], attn_mask=seen, scale=scale, enable_gqa=True)
        out[q_start:q_end] = attended[0].transpose(0, 1)
    return out


def write_cache(cache: torch.Tensor, index: torch.Tensor, new: torch.Tensor) -> None:
    """``cache[index] = new``, in the cache's type (an 8-bit cache is written through its bytes: torch has no
    ``index_copy_`` for 8-bit floats)."""
    if cache.dtype == new.dtype:
        cache.index_copy_(0, index, new)
    else:
        cache.view(torch.uint8).index_copy_(0, index, new.to(cache.dtype).view(torch.uint8))


def paged_varlen_forward(module, query, key, value, attention_mask, cache=None, cu_seq_lens_q=None,
                         cu_seq_lens_k=None, max_seqlen_q=None, max_seqlen_k=None, block_table=None, **kwargs):
    """The attention implementation ``paged|mcq_varlen``: the step's new keys and values written to the paged
    cache as the cache's own ``update`` writes them (full-attention layers), then ``varlen_attention`` reading each
    reply's keys and values where they lie in the cache, through the step's read index (``update`` would first
    copy them all out, packed: as many bytes again as the attention reads)."""
    if cache is None:
        raise ValueError(f"{IMPLEMENTATION} runs inside continuous batching only (it needs the paged cache)")
    if block_table is not None or cache.sliding_windows[module.layer_idx] != 1:
        raise ValueError(f"{IMPLEMENTATION} reads full-attention layers through the step's read index; this step has a "
                         "block table or a sliding-window layer (varlen_problem should have refused the model)")
    if isinstance(cu_seq_lens_k, dict):  # one entry per layer type; only full attention is allowed in
        cu_seq_lens_k = cu_seq_lens_k["full_attention"]
    group, layer = cache.layer_index_to_group_indices[module.layer_idx]
    key_cache, value_cache = cache.key_cache[layer], cache.value_cache[layer]
    key, value = key.transpose(1, 2).squeeze(0), value.transpose(1, 2).squeeze(0)  # (tokens, kv_heads, dim)
    write_cache(key_cache, kwargs["write_index"][group], key)
    write_cache(value_cache, kwargs["write_index"][group], value)
    rows = kwargs["read_index"][group]
    _calls["attention"] += 1
    scale = module.scaling if module.scaling is not None else 1 / math.sqrt(query.shape[-1])
    query = query[0].transpose(0, 1)
    if rows.numel() == 0:  # nothing cached yet (prompts alone): the new keys are all there is
        out = varlen_attention(query, key, value, cu_seq_lens_q, cu_seq_lens_k, scale)
    else:
        out = varlen_attention(query, key_cache, value_cache, cu_seq_lens_q, cu_seq_lens_k, scale, rows)
    return out.unsqueeze(0), None


@contextlib.contextmanager
def fp8_key_value_cache():
    """Within: transformers' paged cache is allocated in float8 (e4m3, unscaled) instead of the model's type, so the
    same memory holds twice the tokens; ``paged_varlen_forward`` writes it rounded to 8 bits and the kernel reads
    it back in the queries' type. Nothing else may read or copy that cache: setup.py allows it with varlen only, and
    continuous.py keeps transformers' CPU offloading off (its copies back use ``index_copy_``, which 8-bit floats
    lack)."""
    from transformers.generation.continuous_batching import cache

    init = cache.PagedAttentionCache.__init__

    @functools.wraps(init)
    def in_fp8(self, *args, **kwargs):
        init(self, *args, **{**kwargs, "dtype": torch.float8_e4m3fn})

    cache.PagedAttentionCache.__init__ = in_fp8
    try:
        yield
    finally:
        cache.PagedAttentionCache.__init__ = init


def varlen_problem(config) -> str | None:
    """Why a model of this config (a ``PretrainedConfig``) cannot attend as ``paged|mcq_varlen``, or None. Layer
    types are read as continuous batching reads them (``group_layers_by_attn_type``: no ``layer_types`` and a
    ``sliding_window``, as Mistral's configs have, makes every layer a sliding one)."""
    from transformers.generation.continuous_batching.cache import group_layers_by_attn_type

    text = config.get_text_config()
    if any(kind != "full_attention" for kind in group_layers_by_attn_type(text)[1]):
        return "varlen attention attends over whole replies; this model has sliding-window layers"
    if text.num_attention_heads % text.num_key_value_heads:
        return (f"varlen attention shares each key/value head among a whole group of query heads; this model has "
                f"{text.num_attention_heads} query heads over {text.num_key_value_heads}")
    return None


def check_base(base: str, remedy: str = "--paged_attention sdpa") -> None:
    """Refuse, before loading, a local base model that ``varlen_problem`` rules out, naming ``remedy`` (a base that
    is not a local folder is checked once loaded)."""
    from pathlib import Path

    from transformers import AutoConfig

    if not (Path(base) / "config.json").is_file():
        return
    try:
        config = AutoConfig.from_pretrained(base)
    except (OSError, ValueError, KeyError):  # a config transformers cannot read: loading will say why
        return
    problem = varlen_problem(config)
    if problem:
        raise ConfigError(f"{base}: {problem}: use {remedy}")


@contextlib.contextmanager
def varlen_paged_attention(model, remedy: str = "--paged_attention sdpa"):
    """Within: continuous batching on ``model`` attends through ``varlen_attention``; the model's attention
    implementation is restored afterwards. Refused (ConfigError, naming ``remedy``) for sliding-window models, and
    when nothing within called it: the option never runs as something else under its name."""
    from transformers import AttentionInterface

    problem = varlen_problem(model.config)
    if problem:
        raise ConfigError(f"{problem}: use {remedy}")
    AttentionInterface.register(IMPLEMENTATION, paged_varlen_forward)
    before = model.config._attn_implementation
    model.set_attn_implementation(IMPLEMENTATION)
    _calls["attention"] = 0
    try:
        yield _calls
    finally:
        model.set_attn_implementation(before)
    if not _calls["attention"]:
        raise ConfigError(f"varlen attention was never called (the model computes attention without transformers' "
                          f"attention functions): use {remedy}")
