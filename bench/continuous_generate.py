"""transformers' continuous batching (``generate_batch``: paged key/value cache, CUDA graphs) on the same 4-bit
weights and reasoning prompts as ``infer.py --mode reason``, for the generation-speed measurements of
bench/RESULTS.md.

    python bench/continuous_generate.py --model /tmp/q14b --test_file t.csv --runs 128x512:graphs,64x128 --json o.json

Every reply is forced to ``--new_tokens`` (no end-of-turn token), so the figure is generated tokens per second at
that length whatever random weights would otherwise do. The cache gets ``--cache_share`` of the memory the 24 GiB
cap leaves (``:0.3`` after a run's size: 30%); CUDA graphs follow transformers' default (off with SDPA) unless a
run says ``:graphs`` or ``--graphs true/false`` is given. ``:nf4``: the 4-bit layers decode through core/nf4.py's
fused kernel; ``:varlen``: replies attend through core/varlen.py (``--paged_attention varlen``; CUDA graphs are
off for it too unless the run says ``:graphs``, as infer.py's engine always does on a GPU); ``:async``: the next
step prepared on the CPU while the GPU computes this one (transformers' async batching, as infer.py's
``--async_batching true``; off otherwise); ``:kv8``: the key/value cache kept in FP8 (e4m3, no scale; with ``:varlen`` only, whose
kernel reads it back to 16 bits), so the same memory holds twice the tokens. ``:profile``: the run under torch.profiler, its busiest GPU kernels and CPU operations written beside
the JSON (``<json>_<run>.txt``), and the GPU's busy time beside the wall time. One short warm-up run first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch
    from transformers import AutoTokenizer, GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    from bench_14b import cap_memory, card, load_nf4_model, peak_gb, reset_peak
    from mcqtune.core.batch_planning import cache_bytes_per_token, memory_budget_gb
    from mcqtune.data.questions import PromptStyle, load_mcq_csv
    from mcqtune.model.prompts import encode_prompts

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--test_file", required=True)
    parser.add_argument("--runs", required=True, help="REQUESTSxTOKENS[:graphs][:share] ,... e.g. 128x512,"
                                                      "32x2048:graphs:0.4 (CUDA graphs on, 40%% of the memory)")
    parser.add_argument("--json", required=True)
    parser.add_argument("--cache_share", type=float, default=0.8)
    parser.add_argument("--block_size", type=int, default=256)
    parser.add_argument("--max_batch_tokens", type=int, default=2048)
    parser.add_argument("--graphs", default="auto")
    parser.add_argument("--fp8", action="store_true", help="convert the weights with core/fp8.py first")
    args = parser.parse_args()
    cap_memory()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = load_nf4_model(args.model, attn_implementation="paged|sdpa")
    converted = None
    if args.fp8:
        from mcqtune.core.fp8 import to_fp8

        start = time.perf_counter()
        model, layers = to_fp8(model)
        converted = {"layers": layers, "seconds": round(time.perf_counter() - start, 1), **peak_gb()}
    frame = load_mcq_csv(args.test_file, number_rows=True)
    prompts = encode_prompts(tokenizer, frame, PromptStyle(reasoning=True), 512)
    budget = memory_budget_gb()
    results = {"card": card(), "weights_gb": round(torch.cuda.memory_allocated() / 2**30, 2),
               "budget_gb": round(budget, 2), "block_size": args.block_size,
               "max_batch_tokens": args.max_batch_tokens, "fp8": converted,
               "prompt_tokens_mean": round(sum(map(len, prompts)) / len(prompts), 1), "runs": []}
    for spec in ["8x16"] + args.runs.split(","):
        size, *flags = spec.split(":")
        requests, new_tokens = map(int, size.split("x"))
        graphs = True if "graphs" in flags else None if args.graphs == "auto" else args.graphs == "true"
        share = next((float(f) for f in flags if f[0].isdigit()), args.cache_share)
        kv_bytes = args.block_size * cache_bytes_per_token(model.config, "fp8" if "kv8" in flags else "auto")
        blocks = int(budget * share * 2**30 / kv_bytes)
        rows = [prompts[i % len(prompts)] for i in range(requests)]
        config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=-1,
                                  pad_token_id=tokenizer.pad_token_id)
        cb = ContinuousBatchingConfig(num_blocks=blocks, block_size=args.block_size,
                                      max_batch_tokens=args.max_batch_tokens, use_cuda_graph=graphs,
                                      use_async_batching="async" in flags)
        reset_peak()
        with contextlib.ExitStack() as stack:
            if "nf4" in flags:
                from mcqtune.core.nf4 import fused_nf4

                stack.enter_context(fused_nf4(model))
            if "varlen" in flags:
                from mcqtune.core.varlen import varlen_paged_attention

                stack.enter_context(varlen_paged_attention(model))
            if "kv8" in flags:
                from mcqtune.core.varlen import fp8_key_value_cache

                if "varlen" not in flags:
                    raise SystemExit(f"{spec}: :kv8 needs :varlen (only its kernel reads an FP8 cache)")
                stack.enter_context(fp8_key_value_cache())
            profiler = stack.enter_context(torch.profiler.profile(activities=[
                torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA])) if "profile" in flags else None
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = model.generate_batch(rows, generation_config=config, continuous_batching_config=cb)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        profiled = {}
        if profiler is not None:
            averages = profiler.key_averages()
            busy_ms = sum(event.self_device_time_total for event in averages) / 1000
            profiled = {"gpu_busy_s": round(busy_ms / 1000, 2), "gpu_busy_share": round(busy_ms / 1000 / seconds, 3)}
            Path(f"{args.json.removesuffix('.json')}_{spec.replace(':', '_')}.txt").write_text(
                averages.table(sort_by="self_device_time_total", row_limit=45) + "\n\n"
                + averages.table(sort_by="self_cpu_time_total", row_limit=30))
        made = sum(len(o.generated_tokens) for o in out.values())
        errors = [o.error for o in out.values() if o.error]
        run = {"spec": spec, "num_blocks": blocks, "requests": requests, "new_tokens": new_tokens, "seconds": round(seconds, 1), "generated": made,
               "tokens_per_s": round(made / seconds, 1), "errors": errors[:3], **profiled, **peak_gb()}
        results["runs"].append(run)
        print(json.dumps(run), flush=True)
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
