"""core/varlen.py on a GPU: the varlen attention kernel against the same attention in float32 (reference_attention)
and against the attention part of transformers' paged SDPA path for the same step (the key/value heads repeated for
every query head, then SDPA over the whole step through a dense mask; without the cache's packed copy that its
``update`` makes first, and with a boolean mask where transformers builds an additive one), at the 14B shape's
heads (40 query heads,
8 key/value heads of 128), in bfloat16, with the keys packed and read in place from a paged cache. Each step is replayed as a CUDA graph of 10 (as continuous batching
replays its steps); times are per layer, and per step for 48 layers.

    python bench/varlen_check.py --json out.json
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

HEADS, KV_HEADS, DIM, LAYERS = 40, 8, 128, 48
# (name, query tokens per reply, cached tokens per reply, replies): decoding steps of the README plan (71 replies),
# longer replies, more replies, and a step that mixes prompts with decoding
STEPS = [("decode 71 x 300", [1] * 71, [300] * 71), ("decode 71 x 650", [1] * 71, [650] * 71),
         ("decode 32 x 2200", [1] * 32, [2200] * 32), ("decode 128 x 300", [1] * 128, [300] * 128),
         ("prompts 15 x 134 + decode 50 x 300", [134] * 15 + [1] * 50, [134] * 15 + [300] * 50)]


def dense_paged_sdpa(query, key, value, mask, scale):
    """transformers' sdpa_paged.py for one layer: repeat_kv over the whole step, SDPA with the step's mask."""
    import torch

    key = key.transpose(0, 1).unsqueeze(0).repeat_interleave(HEADS // KV_HEADS, dim=1).contiguous()
    value = value.transpose(0, 1).unsqueeze(0).repeat_interleave(HEADS // KV_HEADS, dim=1).contiguous()
    out = torch.nn.functional.scaled_dot_product_attention(query.transpose(0, 1).unsqueeze(0).contiguous(), key,
                                                           value, attn_mask=mask, scale=scale)
    return out.transpose(1, 2).contiguous()


def step_mask(q_lengths, k_lengths, device):
    """The dense mask transformers builds for a packed step: each query sees its own reply's keys, causally."""
    import torch

    mask = torch.zeros(sum(q_lengths), sum(k_lengths), dtype=torch.bool, device=device)
    q0 = k0 = 0
    for q, k in zip(q_lengths, k_lengths):
        mask[q0:q0 + q, k0:k0 + k] = torch.arange(k, device=device)[None, :] <= \
            (k - q + torch.arange(q, device=device))[:, None]
        q0, k0 = q0 + q, k0 + k
    return mask[None, None]


def main() -> None:
    import torch

    from mcqtune.core.varlen import reference_attention, varlen_attention
    from nf4_check import graph_ms

    parser = argparse.ArgumentParser()
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    result = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "steps": []}
    scale = DIM ** -0.5
    for name, q_lengths, k_lengths in STEPS:
        cu_q = torch.tensor([0, *torch.tensor(q_lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
        cu_k = torch.tensor([0, *torch.tensor(k_lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
        query = torch.randn(sum(q_lengths), HEADS, DIM, device="cuda", dtype=torch.bfloat16)
        key = torch.randn(sum(k_lengths), KV_HEADS, DIM, device="cuda", dtype=torch.bfloat16)
        value = torch.randn_like(key)
        with torch.no_grad():
            got = varlen_attention(query, key, value, cu_q, cu_k, scale).float()
            want = reference_attention(query.float(), key.float(), value.float(), cu_q, cu_k, scale)
            # the same keys in a paged cache twice their size, in blocks of 256 rows in shuffled order, read in place
            blocks = -(-key.shape[0] // 256)
            order = torch.randperm(2 * blocks, device="cuda")[:blocks]
            rows = (order[:, None] * 256 + torch.arange(256, device="cuda")[None, :]).flatten()[:key.shape[0]]
            key_cache = torch.zeros(2 * blocks * 256, KV_HEADS, DIM, device="cuda", dtype=torch.bfloat16)
            value_cache = torch.zeros_like(key_cache)
            key_cache[rows], value_cache[rows] = key, value
            in_place = varlen_attention(query, key_cache, value_cache, cu_q, cu_k, scale, rows).float()
            mask = step_mask(q_lengths, k_lengths, "cuda")
            dense = dense_paged_sdpa(query, key, value, mask, scale)[0].float()
            row = {"step": name, "query_tokens": sum(q_lengths), "key_tokens": sum(k_lengths),
                   "max_abs_diff_vs_float32": float((got - want).abs().max()),
                   "in_place_max_abs_diff_vs_packed": float((in_place - got).abs().max()),
                   "dense_max_abs_diff_vs_float32": float((dense - want).abs().max()),
                   "varlen_ms": graph_ms(functools.partial(varlen_attention, query, key, value, cu_q, cu_k, scale), 10),
                   "varlen_in_place_ms": graph_ms(functools.partial(varlen_attention, query, key_cache, value_cache,
                                                                    cu_q, cu_k, scale, rows), 10),
                   "dense_sdpa_ms": graph_ms(functools.partial(dense_paged_sdpa, query, key, value, mask, scale), 10)}
        for key_name in ("varlen_ms", "varlen_in_place_ms", "dense_sdpa_ms"):
            if row[key_name] is not None:
                row[key_name.replace("_ms", "_step_ms")] = round(row[key_name] * LAYERS, 2)
        result["steps"].append(row)
        print(json.dumps(row), flush=True)
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
