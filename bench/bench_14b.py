"""Speed and memory at the real Qwen2.5-14B-Instruct-1M shape, ours against the reference recipe, on a GPU.

    python bench/bench_14b.py build --out /tmp/q14b                       # synthetic model, random bf16
    python bench/bench_14b.py ours --model /tmp/q14b --data train.csv --json ours.json
    python bench/bench_14b.py reference --model /tmp/q14b --data train.csv --json ref.json
    python bench/bench_14b.py summarize ours.json ref.json                # -> bench/results.json
    torchrun --nproc_per_node 2 bench/bench_14b.py scale --model /tmp/q14b --data train.csv --json two.json

Each measuring command runs in its own process with the process capped at 24 GiB of GPU memory, as on an
RTX 4090. Speed and memory do not depend on the weight values, so random weights of the exact shape
stand in for the real model. `ours` runs train_sft.main and infer's answering functions exactly as the
scripts do; `reference` is the recipe we replace (plain transformers + bitsandbytes NF4 double quant +
peft, TRL's default full-vocabulary loss, per-device batch 4 x accumulation 8; batched HF generation).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")

CAP_GB = 24.0  # RTX 4090
logger = logging.getLogger("bench")


def cap_memory(cap_gb: float = CAP_GB) -> None:
    import torch

    if not torch.cuda.is_available():  # CPU smoke test of the bench itself
        return
    device = int(os.environ.get("LOCAL_RANK", 0))  # one GPU per process under torchrun
    torch.cuda.set_device(device)
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb * 2**30 / total), device)


def card() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def peak_gb() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"peak_allocated_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 2)}


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def sample_rows(data: str, n: int, seed: int = 0, out: Path | None = None) -> Path:
    """n rows drawn at random from the whole file (every length bucket), written as a CSV."""
    from mcq_dataset import load_mcq_csv

    frame = load_mcq_csv(data, require_answer=True).sample(n=n, random_state=seed)
    out = out or Path(f"/tmp/bench_rows_{n}_{seed}.csv")
    frame.to_csv(out, index=False)
    return out


class StepTimer:
    """Trainer callback: wall time of each optimiser step, to report steady-state samples/s."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                import torch

                torch.cuda.synchronize() if torch.cuda.is_available() else None
                timer.starts.append(time.perf_counter())

            def on_step_end(self, args, state, control, **kwargs):
                import torch

                torch.cuda.synchronize() if torch.cuda.is_available() else None
                timer.ends.append(time.perf_counter())

        self.starts, self.ends, self.callback = [], [], _Callback()

    def samples_per_second(self, samples_per_step: int, skip: int = 2) -> float:
        durations = [e - s for s, e in zip(self.starts, self.ends)][skip:]
        return samples_per_step * len(durations) / sum(durations) if durations else float("nan")


def count_tokens(csv_path: Path, model_dir: str) -> float:
    from mcq_dataset import encode_training_example, load_mcq_csv
    from modeling import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    frame = load_mcq_csv(csv_path, require_answer=True)
    return sum(len(encode_training_example(tokenizer, row)["input_ids"]) for _, row in frame.iterrows()) / len(frame)


# ---------------------------------------------------------------------------------------------- ours


def bench_our_training(model: str, rows: Path, micro_batch: int, dropout: float, n: int) -> dict:
    import train_sft

    out = Path(f"/tmp/bench_train_mb{micro_batch}_do{dropout}")
    argv = ["--config", str(ROOT / "configs" / "qwen2.5-14b-4090.yaml"), "--model_name_or_path", model,
            "--train_file", str(rows), "--output_dir", str(out), "--val_fraction", "0.02",
            "--per_device_train_batch_size", str(micro_batch), "--gradient_accumulation_steps", str(32 // micro_batch),
            "--lora_dropout", str(dropout), "--max_steps", str(n // 32), "--eval_strategy", "no",
            "--save_strategy", "no", "--load_best_model_at_end", "false", "--logging_steps", "1",
            "--early_stopping_patience", "0"]
    script_args, training_args = train_sft.make_parser().parse_args_and_config(argv)
    timer = StepTimer()
    original = train_sft.build_trainer

    def with_timer(*args, **kwargs):
        trainer = original(*args, **kwargs)
        trainer.add_callback(timer.callback)
        return trainer

    train_sft.build_trainer = with_timer
    reset_peak()
    started = time.perf_counter()
    summary = train_sft.main(script_args, training_args)
    train_sft.build_trainer = original
    losses = [e["loss"] for e in summary["log_history"] if "loss" in e]
    return {"micro_batch": micro_batch, "lora_dropout": dropout, "optim": str(training_args.optim),
            "processes": training_args.world_size, "steps": summary["steps"],
            "samples_per_s": round(timer.samples_per_second(32), 2), "wall_s": round(time.perf_counter() - started, 1),
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "adapter": summary["outputs"]["adapter"], **peak_gb()}


def bench_our_inference(adapter: str, rows: Path, n_generate: int, batch_size: int) -> dict:
    import infer
    from mcq_dataset import load_mcq_csv

    results = {}
    backend = infer.select_backend("auto")
    args = infer.InferArguments(test_file=str(rows), model_path=adapter, batch_size=batch_size)
    reset_peak()
    model, tokenizer = infer.load_for_inference(args, backend)
    frame = load_mcq_csv(rows)
    # score_full: the same scoring with every prompt computed whole (no shared prefix), for comparison.
    for label, subset, size in (("score", frame, batch_size), ("score_full", frame, batch_size),
                                ("generate", frame.head(n_generate), batch_size)):
        mode = "generate" if label == "generate" else "score"
        run = infer.InferArguments(test_file=str(rows), model_path=adapter, mode=mode, batch_size=size,
                                   output_file=f"/tmp/bench_{label}.csv", output_dir=f"/tmp/bench_{label}_run",
                                   resume=False, share_prefix=label != "score_full")
        store = infer.PredictionStore(run.run_dir / infer.CHECKPOINT_NAME, {"bench": mode}, resume=False)
        progress = _NullProgress()
        # Warm-up on two batches of different lengths: the first shapes a process sees pay one-off kernel
        # compilation (seconds, once per run), which is reported apart from the steady speed.
        warm = subset.head(2 * size)
        warm_started = time.perf_counter()
        (infer.score_rows if mode == "score" else infer.generate_rows)(model, tokenizer, warm, run, size,
                                                                       infer.PredictionStore(
                                                                           Path(f"/tmp/warm_{label}.jsonl"), {}, False),
                                                                       progress)
        warm_seconds = time.perf_counter() - warm_started
        reset_peak()
        started = time.perf_counter()
        if mode == "score":
            infer.score_rows(model, tokenizer, subset, run, size, store, progress)
        else:
            infer.generate_rows(model, tokenizer, subset, run, size, store, progress)
        seconds = time.perf_counter() - started
        results[label] = {"questions": len(subset), "batch_size": size, "qps": round(len(subset) / seconds, 2),
                          "seconds": round(seconds, 2), "warmup_questions": len(warm),
                          "warmup_seconds": round(warm_seconds, 2), **peak_gb()}
        if mode == "generate":
            rules = [r.get("rule") for r in store.records.values()]
            results[label]["unparsed"] = sum(1 for r in rules if r and r.startswith("unparsed"))
    return results


class _NullProgress:
    def update(self, n):
        pass


def run_ours(args) -> dict:
    cap_memory()
    rows = sample_rows(args.data, args.n_train + 16, seed=0)
    result = {"card": card(), "avg_tokens_per_sample": round(count_tokens(rows, args.model), 1), "train": []}
    for micro_batch, dropout in args.variants:
        result["train"].append(bench_our_training(args.model, rows, micro_batch, dropout, args.n_train))
        logger.info("train %s", result["train"][-1])
    infer_rows = sample_rows(args.data, args.n_infer, seed=1)
    result["infer"] = bench_our_inference(result["train"][0]["adapter"], infer_rows, args.n_generate, args.infer_batch)
    return result


def run_scale(args) -> dict:
    """Under torchrun with N processes: our training (effective batch 32 kept) and sharded scoring, as the
    scripts run them on N GPUs. Each process is capped at 24 GiB; rank 0 reports."""
    import infer
    from mcq_dataset import load_mcq_csv

    cap_memory()
    rank, world, local_rank = infer.distributed_info()
    rows = sample_rows(args.data, args.n_train + 16, seed=0, out=Path(f"/tmp/bench_rows_{args.n_train}_r{rank}.csv"))
    train = bench_our_training(args.model, rows, 16, 0.0, args.n_train)
    backend = infer.select_backend("auto")
    infer_rows = sample_rows(args.data, args.n_infer, seed=1, out=Path(f"/tmp/bench_infer_{args.n_infer}_r{rank}.csv"))
    run = infer.InferArguments(test_file=str(infer_rows), model_path=train["adapter"], batch_size=args.infer_batch,
                               output_dir=f"/tmp/bench_scale_{world}", resume=False)
    model, tokenizer = infer.load_for_inference(run, backend, {"": local_rank} if world > 1 else None)
    frame = load_mcq_csv(infer_rows)
    shard = frame.iloc[rank::world]
    # One warm-up batch (the method of the recorded 2-GPU run, bench/RESULTS.md compares it accordingly).
    warm = infer.PredictionStore(Path(f"/tmp/warm_scale_r{rank}.jsonl"), {}, False)
    infer.score_rows(model, tokenizer, shard.head(args.infer_batch), run, args.infer_batch, warm, _NullProgress())
    store = infer.PredictionStore(Path(f"/tmp/scale_r{rank}.jsonl"), {}, False)
    sync = infer.barrier if world > 1 else (lambda: None)
    sync()
    started = time.perf_counter()
    infer.score_rows(model, tokenizer, shard, run, args.infer_batch, store, _NullProgress())
    sync()
    seconds = time.perf_counter() - started
    return {"card": card(), "processes": world, "train": train,
            "score": {"questions": len(frame), "batch_size": args.infer_batch, "qps": round(len(frame) / seconds, 2),
                      "seconds": round(seconds, 2), **peak_gb()}}


def run_profile(args) -> dict:
    """Time one scoring forward for a grid of batch shapes, whole prompts against shared-prefix ones of the
    same total length: shows the fixed cost per batch and the cost per token (where the time goes)."""
    import random

    import torch

    import infer
    from scoring import SharedPrefix, letter_logits, letter_logits_after_prefix, letter_token_ids

    cap_memory()
    backend = infer.select_backend("auto")
    model, tokenizer = infer.load_for_inference(infer.InferArguments(model_path=args.model), backend)
    prefix = SharedPrefix(tokenizer)
    letters = letter_token_ids(tokenizer)
    rng = random.Random(0)
    device = next(model.parameters()).device
    rows = []

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    def once(fn):
        with torch.inference_mode():
            sync()
            started = time.perf_counter()
            fn()
            sync()
        return time.perf_counter() - started

    def timed(fn, repeats=3):  # steady time: after one call at this shape
        once(fn)
        return sum(once(fn) for _ in range(repeats)) / repeats

    def prompts(batch: int, width: int) -> list[list[int]]:  # the template prefix, then random tokens
        return [prefix.tokens + [rng.randrange(1000, 100000) for _ in range(width - len(prefix.tokens))]
                for _ in range(batch)]

    # The first call at a new shape against later calls at that shape (one-off costs per shape).
    firsts = []
    for width in (96, 97, 128, 129, 160, 161):
        seqs = prompts(64, width)
        ids = torch.tensor(seqs, device=device)
        mask = torch.ones_like(ids)
        mask[0, :5] = 0  # a padded row, as real batches have
        entry = {"width": width}
        for name, fn in (("shared", lambda: letter_logits_after_prefix(model, prefix, None, seqs, len(prefix.tokens),
                                                                       letters, tokenizer.pad_token_id)),
                         ("whole", lambda: letter_logits(model, ids, mask, letters))):
            entry[f"{name}_first_ms"] = round(once(fn) * 1e3, 1)
            entry[f"{name}_again_ms"] = round(once(fn) * 1e3, 1)
        firsts.append(entry)
        logger.info("first call %s", entry)
    for batch, width in ((64, 128), (128, 128), (64, 256)):
        seqs = prompts(batch, width)
        ids = torch.tensor(seqs, device=device)
        mask = torch.ones_like(ids)
        whole = timed(lambda: letter_logits(model, ids, mask, letters))
        shared = timed(lambda: letter_logits_after_prefix(model, prefix, None, seqs, len(prefix.tokens), letters,
                                                          tokenizer.pad_token_id))
        rows.append({"batch": batch, "width": width, "whole_ms": round(whole * 1e3, 1),
                     "shared_prefix_ms": round(shared * 1e3, 1),
                     "whole_tflops": round(2 * 14.7e9 * batch * width / whole / 1e12, 1),
                     "prefix_tokens": len(prefix.tokens)})
        logger.info("profile %s", rows[-1])
    # infer's own loop on real questions, this model (no adapter)
    from mcq_dataset import load_mcq_csv

    data = sample_rows(args.data, args.n_infer, seed=1)
    frame = load_mcq_csv(data)
    for share in (True, False):
        run = infer.InferArguments(test_file=str(data), model_path=args.model, batch_size=args.infer_batch,
                                   share_prefix=share)
        infer.score_rows(model, tokenizer, frame.head(args.infer_batch), run, args.infer_batch,
                         infer.PredictionStore(Path(f"/tmp/pw{share}.jsonl"), {}, False), _NullProgress())
        seconds = once(lambda: infer.score_rows(model, tokenizer, frame, run, args.infer_batch,
                                                infer.PredictionStore(Path(f"/tmp/p{share}.jsonl"), {}, False),
                                                _NullProgress()))
        rows.append({"score_rows_share_prefix": share, "questions": len(frame), "qps": round(len(frame) / seconds, 1)})
        logger.info("profile %s", rows[-1])
    rows.append({"first_calls": firsts})
    return {"card": card(), "profile": rows, **peak_gb()}


# ---------------------------------------------------------------------------------------------- reference


def run_reference(args) -> dict:
    """The recipe we replace: HF + bnb NF4 (double quant) + peft, TRL's default loss; HF batched generation."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from mcq_dataset import build_sft_records, load_mcq_csv, render_prompt

    cap_memory()
    gpu = torch.cuda.is_available()
    rows = sample_rows(args.data, args.n_ref_train, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(args.model, quantization_config=quant, dtype=torch.bfloat16,
                                                 device_map={"": 0} if gpu else None)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, bias="none",
                                             task_type="CAUSAL_LM", target_modules=["q_proj", "k_proj", "v_proj",
                                                                                    "o_proj", "gate_proj", "up_proj",
                                                                                    "down_proj"]))
    dataset = Dataset.from_list(build_sft_records(load_mcq_csv(rows, require_answer=True)))
    config = SFTConfig(output_dir="/tmp/bench_ref", per_device_train_batch_size=4, gradient_accumulation_steps=8,
                       max_steps=args.n_ref_train // 32, learning_rate=2e-4, lr_scheduler_type="cosine",
                       warmup_steps=0.03, weight_decay=0.01, logging_steps=1, bf16=gpu, report_to="none",
                       gradient_checkpointing=True, save_strategy="no", max_length=560, seed=42)
    timer = StepTimer()
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[timer.callback])
    reset_peak()
    trainer.train()
    result = {"card": card(), "train": {"micro_batch": 4, "steps": trainer.state.global_step,
                                        "samples_per_s": round(timer.samples_per_second(32), 2), **peak_gb()}}
    model.eval()
    frame = load_mcq_csv(sample_rows(args.data, args.n_ref_generate, seed=1))
    prompts = [render_prompt(tokenizer, row) for _, row in frame.iterrows()]
    tokenizer.padding_side = "left"
    result["generate"] = {}
    for label, new_tokens in (("48_tokens", 48), ("stop_after_letter", 1)):
        reset_peak()
        started = time.perf_counter()
        for i in range(0, len(prompts), 8):
            batch = tokenizer(prompts[i:i + 8], return_tensors="pt", padding=True).to(model.device)
            with torch.inference_mode():
                model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                               repetition_penalty=1.1, pad_token_id=tokenizer.pad_token_id)
        seconds = time.perf_counter() - started
        result["generate"][label] = {"questions": len(prompts), "batch_size": 8,
                                     "qps": round(len(prompts) / seconds, 2), **peak_gb()}
    return result


# ---------------------------------------------------------------------------------------------- summary


def summarize(ours_path: str, ref_path: str, out: Path, scale_path: str | None = None) -> dict:
    ours, ref = json.loads(Path(ours_path).read_text()), json.loads(Path(ref_path).read_text())
    default = ours["train"][0]
    results = {
        "card": ours["card"], "reference_card": ref["card"],
        "ref_train_samples_per_s": ref["train"]["samples_per_s"], "ref_train_peak_gb": ref["train"].get("peak_reserved_gb"),
        "our_train_samples_per_s": default["samples_per_s"], "our_train_peak_gb": default.get("peak_reserved_gb"),
        "our_train_peak_allocated_gb": default.get("peak_allocated_gb"),
        "train_speedup": round(default["samples_per_s"] / ref["train"]["samples_per_s"], 2),
        "ref_gen_qps": ref["generate"]["48_tokens"]["qps"],
        "ref_gen_stop_after_letter_qps": ref["generate"]["stop_after_letter"]["qps"],
        "our_score_qps": ours["infer"]["score"]["qps"], "our_generate_qps": ours["infer"]["generate"]["qps"],
        "score_speedup_vs_ref_gen": round(ours["infer"]["score"]["qps"] / ref["generate"]["48_tokens"]["qps"], 1),
        "our_infer_peak_gb": max(ours["infer"]["score"].get("peak_reserved_gb", 0),
                                 ours["infer"]["generate"].get("peak_reserved_gb", 0)),
        "avg_tokens_per_sample": ours["avg_tokens_per_sample"],
        "our_train_tokens_per_s": round(default["samples_per_s"] * ours["avg_tokens_per_sample"], 1),
        "train_variants": ours["train"], "ours": ours, "reference": ref,
    }
    if "score_full" in ours["infer"]:
        results["our_score_without_shared_prefix_qps"] = ours["infer"]["score_full"]["qps"]
    if scale_path:
        scale = json.loads(Path(scale_path).read_text())
        n = scale["processes"]
        results.update({
            "scale_processes": n, "scale_train_samples_per_s": scale["train"]["samples_per_s"],
            "scale_train_efficiency": round(scale["train"]["samples_per_s"] / (n * default["samples_per_s"]), 3),
            "scale_score_qps": scale["score"]["qps"],
            "scale_score_efficiency": round(scale["score"]["qps"] / (n * ours["infer"]["score"]["qps"]), 3),
            "scale": scale})
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build")
    build.add_argument("--out", required=True)
    build.add_argument("--tokenizer", default=None, help="saved tokenizer to copy (default: build it)")
    for name in ("ours", "reference", "scale", "profile"):
        p = sub.add_parser(name)
        p.add_argument("--model", required=True)
        p.add_argument("--data", required=True)
        p.add_argument("--json", required=True)
        p.add_argument("--n-train", type=int, default=512)
        p.add_argument("--n-ref-train", type=int, default=512)
        p.add_argument("--n-infer", type=int, default=512)
        p.add_argument("--n-generate", type=int, default=128)
        p.add_argument("--n-ref-generate", type=int, default=64)
        p.add_argument("--infer-batch", type=int, default=64)
        p.add_argument("--variants", default="16:0.0", help="micro_batch:dropout pairs, comma separated")
    summary = sub.add_parser("summarize")
    summary.add_argument("ours")
    summary.add_argument("reference")
    summary.add_argument("--scale", default=None, help="JSON of `scale` on N GPUs (same card)")
    summary.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.command == "build":
        import torch

        from tiny_qwen import write_tiny_qwen

        started = time.perf_counter()
        torch.set_default_dtype(torch.bfloat16)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer) if args.tokenizer else None
        write_tiny_qwen(args.out, shape="qwen2.5-14b", dtype="bfloat16", tokenizer=tokenizer)
        print(f"built {args.out} in {time.perf_counter() - started:.0f} s")
        return 0
    if args.command == "summarize":
        print(json.dumps({k: v for k, v in summarize(args.ours, args.reference, Path(args.out), args.scale).items()
                          if not isinstance(v, (dict, list))}, indent=1))
        return 0
    if args.command in ("ours", "scale", "profile"):
        args.variants = [(int(m), float(d)) for m, d in (v.split(":") for v in args.variants.split(","))]
        import modeling

        modeling.select_backend("auto")
        result = {"ours": run_ours, "scale": run_scale, "profile": run_profile}[args.command](args)
    else:
        result = run_reference(args)
    if int(os.environ.get("RANK", 0)) != 0:
        return 0
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
