"""Plain transformers ``generate`` on the same 4-bit weights and prompts as ``infer.py --mode reason``, for the
comparison the reasoning mode is measured against (bench/RESULTS.md).

    python bench/plain_generate.py --model /tmp/q14b --test_file t.csv --batch_size 32 --new_tokens 512 --json o.json

Every reply is forced to ``--new_tokens`` (min = max), so the figure is tokens per second of generation at that
batch and length, whatever random weights would otherwise do. One warm-up batch, then ``--batches`` timed ones.
``--cache static``: transformers' static key/value cache, with which ``generate`` compiles the decoding step
(the warm-up batch then includes the compilation). ``--profile true``: one more batch under torch.profiler,
its busiest GPU kernels and CPU operations written beside the JSON (``<json>_profile.txt``), and the GPU's busy
share of that batch in the JSON (what a GRPO rollout, which is this ``generate``, spends its step on).
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
    from transformers import AutoTokenizer

    from bench_14b import cap_memory, card, load_nf4_model, peak_gb, reset_peak
    from mcqtune.core.scoring import left_pad
    from mcqtune.data.questions import PromptStyle, load_mcq_csv
    from mcqtune.model.prompts import encode_prompts

    parser = argparse.ArgumentParser()
    for name, kind in (("--model", str), ("--test_file", str), ("--batch_size", int), ("--new_tokens", int),
                       ("--batches", int), ("--json", str), ("--cache", str), ("--profile", str)):
        parser.add_argument(name, type=kind, required=name not in ("--batches", "--cache", "--profile"),
                            default={"--batches": 2, "--cache": "dynamic", "--profile": "false"}.get(name))
    args = parser.parse_args()
    cap_memory()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = load_nf4_model(args.model)
    frame = load_mcq_csv(args.test_file, number_rows=True)
    prompts = encode_prompts(tokenizer, frame, PromptStyle(reasoning=True), 512)
    rates = []
    reset_peak()
    for number in range(args.batches + 1 + (args.profile == "true")):  # the profiled batch comes after the timed
        rows = [prompts[(number * args.batch_size + i) % len(prompts)] for i in range(args.batch_size)]
        input_ids, attention_mask = left_pad(rows, tokenizer.pad_token_id)
        profiled = number == args.batches + 1
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode(), (torch.profiler.profile(activities=[
                torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) if profiled
                else contextlib.nullcontext()) as profiler:
            out = model.generate(input_ids=input_ids.cuda(), attention_mask=attention_mask.cuda(), do_sample=False,
                                 min_new_tokens=args.new_tokens, max_new_tokens=args.new_tokens,
                                 pad_token_id=tokenizer.pad_token_id,
                                 **({"cache_implementation": "static"} if args.cache == "static" else {}))
            torch.cuda.synchronize()
        made = (out.shape[1] - input_ids.shape[1]) * args.batch_size
        if profiled:  # its rate is not counted: the profiler slows the host
            averages = profiler.key_averages()
            busy_s = sum(event.self_device_time_total for event in averages) / 1e6
            profile = {"profiled_seconds": round(time.perf_counter() - start, 1), "gpu_busy_s": round(busy_s, 2)}
            Path(f"{args.json.removesuffix('.json')}_profile.txt").write_text(
                averages.table(sort_by="self_device_time_total", row_limit=45) + "\n\n"
                + averages.table(sort_by="self_cpu_time_total", row_limit=30))
        elif number:  # the first batch warms up
            rates.append(made / (time.perf_counter() - start))
        else:
            warmup = time.perf_counter() - start
    result = {"card": card(), "batch_size": args.batch_size, "new_tokens": args.new_tokens, "cache": args.cache,
              "warmup_seconds": round(warmup, 1), "profile": profile if args.profile == "true" else None,
              "tokens_per_s": round(sorted(rates)[len(rates) // 2], 1), "all_rates": [round(r, 1) for r in rates],
              **peak_gb()}
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
