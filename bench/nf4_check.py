"""core/nf4.py on a GPU: the fused NF4 kernel against bitsandbytes' own path (one token: its fused kernel; more:
the weight dequantised to 16 bits, then multiplied), at the 14B shape's layer sizes and decoding batch sizes.

For each layer shape and batch: the kernel's largest difference from bitsandbytes, and each path's time per call,
median of 5, both called from Python ("eager") and replayed as a CUDA graph of 20 calls (as continuous batching
replays its decoding steps). Then the tile settings swept at ``--sweep_rows``, and tiles of 64 and 128 rows at
``--tall_rows`` in a process of their own (a fault there cannot end this one).

    python bench/nf4_check.py --json out.json
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LAYERS = {"q_proj/o_proj": (5120, 5120), "k_proj/v_proj": (1024, 5120), "gate/up_proj": (13824, 5120),
          "down_proj": (5120, 13824)}
PER_DECODER_LAYER = {"q_proj/o_proj": 2, "k_proj/v_proj": 2, "gate/up_proj": 2, "down_proj": 1}  # Qwen2.5-14B
DECODER_LAYERS = 48


def eager_ms(fn, repeats: int = 25) -> float:
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


def graph_ms(fn, calls: int = 20, repeats: int = 5) -> float | None:
    """Milliseconds a call when ``calls`` calls are captured in one CUDA graph and replayed (no Python between
    kernels); None when the path cannot be captured."""
    import torch

    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
    except Exception as err:  # noqa: BLE001  (a path that cannot be captured: noted, not timed)
        print(f"graph capture failed: {type(err).__name__}: {err}", flush=True)
        torch.cuda.synchronize()
        return None
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / calls)
    del graph
    return statistics.median(times)


def nf4_layer(out_features: int, in_features: int):
    import bitsandbytes as bnb
    import torch

    layer = bnb.nn.Linear4bit(in_features, out_features, bias=False, compute_dtype=torch.bfloat16,
                              quant_type="nf4", compress_statistics=True)
    layer.weight = bnb.nn.Params4bit(torch.randn(out_features, in_features, dtype=torch.bfloat16) * 0.02,
                                     requires_grad=False, quant_type="nf4", compress_statistics=True)
    return layer.cuda()


def compare(rows_list: list[int], result: dict) -> None:
    """Every layer shape at every batch: the kernel's difference from bitsandbytes and both paths' times."""
    import torch

    from mcqtune.core.nf4 import nf4_matmul

    step = {m: {} for m in rows_list}
    for name, (out_features, in_features) in LAYERS.items():
        layer = nf4_layer(out_features, in_features)
        state = layer.weight.quant_state
        offset = float(state.offset)
        weight_bytes = layer.weight.numel() + state.absmax.numel()
        for m in rows_list:
            x = torch.randn(m, in_features, device="cuda", dtype=torch.bfloat16)
            row = {"layer": name, "weight": [out_features, in_features], "tokens": m}
            with torch.no_grad():
                want = layer(x).float()
                call = functools.partial(nf4_matmul, x, layer.weight, state, offset)
                row["reference_scale"] = round(float(want.abs().mean()), 4)
                row["max_abs_diff"] = float((call().float() - want).abs().max())
                row["bitsandbytes_eager_ms"] = round(eager_ms(functools.partial(layer, x)), 4)
                row["fused_eager_ms"] = round(eager_ms(call), 4)
                row["bitsandbytes_graph_ms"] = graph_ms(functools.partial(layer, x))
                row["fused_graph_ms"] = graph_ms(call)
                if row["fused_graph_ms"]:
                    row["fused_weight_gb_per_s"] = round(weight_bytes / row["fused_graph_ms"] / 1e6, 1)
            for key in ("bitsandbytes_graph_ms", "fused_graph_ms"):
                if row[key] is not None:
                    step[m][key] = step[m].get(key, 0.0) + PER_DECODER_LAYER[name] * DECODER_LAYERS * row[key]
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
        layer = None  # freed before the next shape is built
        torch.cuda.empty_cache()
    # a decoding step's linear layers at 14B (7 per decoder layer, 48 layers), summed from the rows above
    result["linear_layers_per_step_ms"] = {str(m): {k: round(v, 2) for k, v in s.items()} for m, s in step.items()}
    print(json.dumps(result["linear_layers_per_step_ms"]), flush=True)


def sweep(rows_list: list[int], block_m_choices: tuple[int, ...], deadline: float) -> list[dict]:
    """Each layer shape at each batch under other tiles (block_m, block_n, input splits, blocks a loop step), warps
    and pipeline stages than the defaults, replayed as a CUDA graph: the fastest found, beside the default's time."""
    import torch

    from mcqtune.core.nf4 import BLOCK_K, nf4_matmul

    found = []
    items_left = len(LAYERS) * len(rows_list)  # each layer shape and batch gets an even share of what is left
    for name, (out_features, in_features) in LAYERS.items():
        layer = nf4_layer(out_features, in_features)
        state = layer.weight.quant_state
        offset = float(state.offset)
        for m in rows_list:
            x = torch.randn(m, in_features, device="cuda", dtype=torch.bfloat16)
            with torch.no_grad():
                want = layer(x).float()
                default = graph_ms(functools.partial(nf4_matmul, x, layer.weight, state, offset))
                best, tried = None, 0
                item_deadline = min(deadline, time.monotonic() + (deadline - time.monotonic()) / items_left)
                items_left -= 1
                for block_m, block_n, groups, warps, stages, splits in itertools.product(
                        block_m_choices, (32, 64, 128), (1, 2, 4), (4,), (2, 3), (1, 2, 4, 8)):
                    if in_features % (splits * groups * BLOCK_K) or (block_m > 16 and block_m >= 2 * m):
                        continue
                    if time.monotonic() > item_deadline:  # what was found so far is kept
                        break
                    call = functools.partial(nf4_matmul, x, layer.weight, state, offset,
                                             (block_m, block_n, splits, groups), warps, stages)
                    try:
                        diff = float((call().float() - want).abs().max())
                        ms = graph_ms(call)
                    except Exception as err:  # noqa: BLE001  (a setting this card cannot compile: skipped, noted)
                        print(f"{name} m={m} {block_m},{block_n},{splits},{groups},{warps},{stages}: "
                              f"{type(err).__name__}: {str(err)[:200]}", flush=True)
                        continue
                    tried += 1
                    if ms is not None and (best is None or ms < best["ms"]):
                        best = {"block_m": block_m, "block_n": block_n, "splits": splits, "groups": groups,
                                "num_warps": warps, "num_stages": stages, "ms": round(ms, 4),
                                "max_abs_diff_from_bitsandbytes": diff}
            found.append({"layer": name, "tokens": m, "default_ms": default, "settings": tried, "best": best})
            print(json.dumps(found[-1]), flush=True)
        layer = None
        torch.cuda.empty_cache()
    return found


def main() -> None:
    import bitsandbytes as bnb
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--json", required=True)
    parser.add_argument("--rows", default="1,16,32,64,128,256")
    parser.add_argument("--sweep_rows", default="16,64", help="tile settings compared at these batch sizes ('' none)")
    parser.add_argument("--block_m", default="16,32")
    parser.add_argument("--budget_s", type=float, default=120, help="the sweep stops trying settings after this")
    parser.add_argument("--tall_rows", default="64,256", help="tiles of 64 and 128 rows swept at these ('' none)")
    parser.add_argument("--only_sweep", action="store_true", help="the sweep alone (the tall tiles' process)")
    args = parser.parse_args()
    torch.manual_seed(0)
    result = {"torch": torch.__version__, "bitsandbytes": bnb.__version__, "card": torch.cuda.get_device_name(),
              "rows": []}
    if not args.only_sweep:
        compare([int(r) for r in args.rows.split(",")], result)
        Path(args.json).write_text(json.dumps(result, indent=1))
    block_m = tuple(int(b) for b in args.block_m.split(","))
    result["sweep"] = sweep([int(r) for r in args.sweep_rows.split(",") if r], block_m,
                            time.monotonic() + args.budget_s)
    Path(args.json).write_text(json.dumps(result, indent=1))
    if not args.only_sweep and args.tall_rows:  # in a process of their own: a fault there cannot lose the above
        try:
            done = subprocess.run([sys.executable, __file__, "--json", args.json.replace(".json", "_tall.json"),
                                   "--only_sweep", "--sweep_rows", args.tall_rows, "--block_m", "64,128",
                                   "--budget_s", str(args.budget_s)], timeout=args.budget_s + 90)
            result["tall_tiles_exit_code"] = done.returncode
        except subprocess.TimeoutExpired:
            result["tall_tiles_exit_code"] = "timed out"
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
