"""CPU testbed: the host's share of a continuous-batching decoding step, at the sizes the 14B plan runs.

    python bench/cpu_cb_bookkeeping.py            # writes bench/cpu_cb_bookkeeping.json (findings: bench/RESULTS.md)

Between two GPU steps, transformers' continuous batching works on the host: it schedules the replies, lists every
cached token each reply reads (the read index: a Python list of all the step's cached positions, made a tensor),
and reads the step's new tokens back. With ``--async_batching`` that work overlaps the GPU's; without it, it adds to
every step. This times that host work, per step, where the GPU is not involved: a small random Qwen2 (two layers,
a vocabulary of 1,024, so that the model's own time is small) through ``mcqtune.core.continuous`` with varlen
attention, as many replies at once as the 14B plan holds under the 24 GiB cap (71; 142 with the FP8 cache), prompts
of the sample's median length (315 tokens) and 512-token replies. Only ``prepare_next_batch`` (scheduling and the
step's index tensors) and ``update_batch`` (the new tokens handed to the replies) are timed, for decoding steps only
(one query token a reply). What is not here: the GPU's own time, the copies of the index tensors to the GPU, and the
CUDA-graph replay, which this machine has not got. The host's speed differs from the GPU machine's.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHAPES = ((71, 315, 512), (142, 315, 512))  # replies at once, prompt tokens, reply tokens: the 14B plan, bf16 / FP8


def timed_steps(replies: int, prompt: int, budget: int) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.generation.continuous_batching import continuous_api

    from mcqtune.core.continuous import continuous_replies

    steps: list[dict] = []
    processor = continuous_api.ContinuousBatchProcessor
    prepare, update = processor.prepare_next_batch, processor.update_batch

    @functools.wraps(prepare)
    def timed_prepare(self):
        start = time.perf_counter()
        ready = prepare(self)
        if ready:
            io = self.inputs_and_outputs
            steps.append({"prepare_s": time.perf_counter() - start, "replies": io.num_request_in_batch,
                          "cached_tokens": int(io.true_read_sizes[0])})
        return ready

    @functools.wraps(update)
    def timed_update(self):
        start = time.perf_counter()
        update(self)
        if steps:
            steps[-1]["update_s"] = time.perf_counter() - start

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    model = Qwen2ForCausalLM(config).eval()
    tokenizer = type("Tokenizer", (), {"pad_token_id": 0})()
    prompts = [torch.randint(1, 1024, (prompt,)).tolist() for _ in range(replies)]
    processor.prepare_next_batch, processor.update_batch = timed_prepare, timed_update
    try:
        start = time.perf_counter()
        out = continuous_replies(model, tokenizer, prompts, budget, stop_ids=[], max_replies=replies,
                                 attention="varlen")
        wall = time.perf_counter() - start
    finally:
        processor.prepare_next_batch, processor.update_batch = prepare, update
    decoding = [s for s in steps if s["replies"] == replies and s["cached_tokens"] >= replies * prompt]
    per_step = [1000 * (s["prepare_s"] + s.get("update_s", 0.0)) for s in decoding]
    quarter = max(1, len(per_step) // 4)
    return {"replies": replies, "prompt_tokens": prompt, "reply_tokens": budget, "steps": len(steps),
            "decoding_steps": len(decoding), "generated_tokens": sum(map(len, out)), "wall_s": round(wall, 1),
            "host_ms_per_decoding_step_median": round(statistics.median(per_step), 2),
            "host_ms_first_quarter_median": round(statistics.median(per_step[:quarter]), 2),
            "host_ms_last_quarter_median": round(statistics.median(per_step[-quarter:]), 2),
            "prepare_ms_median": round(1000 * statistics.median(s["prepare_s"] for s in decoding), 2),
            "update_ms_median": round(1000 * statistics.median(s.get("update_s", 0.0) for s in decoding), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(HERE / "cpu_cb_bookkeeping.json"))
    args = parser.parse_args()
    import os

    import transformers

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown") if Path("/proc/cpuinfo").is_file() else "unknown"
    results = {"host": f"{cpu}, {os.cpu_count()} cores", "transformers": transformers.__version__,
               "runs": [timed_steps(*shape) for shape in SHAPES]}
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
