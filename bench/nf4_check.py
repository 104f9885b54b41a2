"""core/nf4.py on a GPU: the fused NF4 kernel against bitsandbytes' own path (the weight dequantised to 16 bits,
then multiplied), at the 14B shape's layer sizes and decoding batch sizes: the largest difference, and each
one's time (median of 25 calls, CUDA events) with the bytes it reads per second.

    python bench/nf4_check.py --json out.json
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LAYERS = {"q_proj/o_proj": (5120, 5120), "k_proj/v_proj": (1024, 5120), "gate/up_proj": (13824, 5120),
          "down_proj": (5120, 13824)}
PER_DECODER_LAYER = {"q_proj/o_proj": 2, "k_proj/v_proj": 2, "gate/up_proj": 2, "down_proj": 1}  # Qwen2.5-14B
DECODER_LAYERS = 48


def median_ms(fn, repeats: int = 25) -> float:
    import torch

    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def sweep(rows_list: list[int], nf4_matmul) -> list[dict]:
    """Each layer shape at each batch size under other tiles (block_n, input splits), warps and pipeline stages
    than the defaults: the fastest found, beside the default's time."""
    import itertools

    import bitsandbytes.functional as bnb_functional
    import torch

    found = []
    for name, (out_features, in_features) in LAYERS.items():
        weight = torch.randn(out_features, in_features, dtype=torch.bfloat16, device="cuda") * 0.02
        packed, state = bnb_functional.quantize_4bit(weight, blocksize=64, quant_type="nf4", compress_statistics=True)
        offset = float(state.offset)
        for m in rows_list:
            x = torch.randn(m, in_features, device="cuda", dtype=torch.bfloat16)
            default = median_ms(lambda: nf4_matmul(x, packed, state, offset), 15)
            block_m = min(64, max(16, 1 << (m - 1).bit_length()))
            best = None
            for block_n, splits, warps, stages in itertools.product((32, 64, 128), (1, 2, 4, 8), (4, 8), (3, 4)):
                try:
                    ms = median_ms(lambda: nf4_matmul(x, packed, state, offset, (block_m, block_n, splits), warps,
                                                      stages), 15)
                except Exception as err:  # noqa: BLE001  (a setting this card cannot compile: skipped, noted)
                    print(f"{name} m={m} {block_n},{splits},{warps},{stages}: {type(err).__name__}", flush=True)
                    continue
                if best is None or ms < best["ms"]:
                    best = {"block_n": block_n, "splits": splits, "num_warps": warps, "num_stages": stages,
                            "ms": round(ms, 4)}
            found.append({"layer": name, "tokens": m, "default_ms": round(default, 4), "best": best})
            print(json.dumps(found[-1]), flush=True)
    return found


def main() -> None:
    import bitsandbytes as bnb
    import torch

    from mcqtune.core.nf4 import fused_forward, nf4_matmul

    parser = argparse.ArgumentParser()
    parser.add_argument("--json", required=True)
    parser.add_argument("--rows", default="1,16,32,64,71,128,256")
    parser.add_argument("--sweep_rows", default="16,64", help="tile settings compared at these batch sizes ('' none)")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows_list = [int(r) for r in args.rows.split(",")]
    result = {"torch": torch.__version__, "bitsandbytes": bnb.__version__, "card": torch.cuda.get_device_name(),
              "rows": []}
    step = {m: {"fused_ms": 0.0, "bitsandbytes_ms": 0.0} for m in rows_list}
    for name, (out_features, in_features) in LAYERS.items():
        layer = bnb.nn.Linear4bit(in_features, out_features, bias=False, compute_dtype=torch.bfloat16,
                                  quant_type="nf4", compress_statistics=True)
        layer.weight = bnb.nn.Params4bit(torch.randn(out_features, in_features, dtype=torch.bfloat16) * 0.02,
                                         requires_grad=False, quant_type="nf4", compress_statistics=True)
        layer = layer.cuda()
        fused = functools.partial(fused_forward, layer, layer.forward, offset=float(layer.weight.quant_state.offset))
        weight_bytes = layer.weight.numel() + layer.weight.quant_state.absmax.numel()
        for m in rows_list:
            x = torch.randn(m, in_features, device="cuda", dtype=torch.bfloat16)
            with torch.no_grad():
                want, got = layer(x).float(), fused(x).float()
                fused_ms = median_ms(lambda: fused(x))
                bnb_ms = median_ms(lambda: layer(x))
            row = {"layer": name, "weight": [out_features, in_features], "tokens": m,
                   "max_abs_diff": float((got - want).abs().max()), "reference_scale": float(want.abs().mean()),
                   "fused_ms": round(fused_ms, 4), "bitsandbytes_ms": round(bnb_ms, 4),
                   "fused_weight_gb_per_s": round(weight_bytes / fused_ms / 1e6, 1)}
            result["rows"].append(row)
            step[m]["fused_ms"] += PER_DECODER_LAYER[name] * DECODER_LAYERS * fused_ms
            step[m]["bitsandbytes_ms"] += PER_DECODER_LAYER[name] * DECODER_LAYERS * bnb_ms
            print(json.dumps(row), flush=True)
    result["sweep"] = sweep([int(r) for r in args.sweep_rows.split(",") if r], nf4_matmul)
    # a decoding step's linear layers at 14B (7 per decoder layer, 48 layers), summed from the rows above
    result["linear_layers_per_step_ms"] = {str(m): {k: round(v, 2) for k, v in s.items()} for m, s in step.items()}
    print(json.dumps(result["linear_layers_per_step_ms"]))
    Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
