"""The anchors the README's training speed is compared with, each timed over at least 16 optimiser steps after
two warm-up steps, on the model and data given:

    python bench/anchors.py trainer-grouped  --model /tmp/q14b --data train.csv --json a.json
    python bench/anchors.py plain-loop       --model /tmp/q14b --data train.csv --json b.json
    python bench/anchors.py unsloth-notebook --model /tmp/q14b --data train.csv --json c.json

(a) ``trainer-grouped``: the reference recipe as it was run: bitsandbytes NF4 with double quantisation, peft
    LoRA r16 / alpha 32 / dropout 0.05 on the seven projections, gradient checkpointing, micro-batch 4 x
    accumulation 8, bf16, AdamW, length-grouped batches, through TRL's SFTTrainer (transformers' Trainer) with
    its full-vocabulary loss on the answer tokens.
(b) ``plain-loop``: the same model, adapters, batches and loss in a plain PyTorch loop (no Trainer).
(c) ``unsloth-notebook``: Unsloth's own notebook recipe: FastLanguageModel in 4-bit, r16 / alpha 16, dropout 0,
    Unsloth gradient checkpointing, micro-batch 2 x accumulation 4, adamw_8bit, train_on_responses_only.
Each writes samples/s over the timed steps, the real (non-padding) tokens per second, the peak GPU memory and
the model-FLOP utilisation of the real tokens (mfu.py), into --json. Every prompt is our chat prompt.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench_14b import ROOT, cap_memory, card, peak_gb, reset_peak, sample_rows

WARMUP_STEPS = 2  # compile kernels, fill allocator caches: not timed
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def encoded_rows(tokenizer, data: str, n: int) -> list[dict]:
    """Our prompt + answer ids with the prompt masked out of the labels (-100), as the reference trained."""
    from mcqtune.model.prompts import encode_training_example
    from mcqtune.data.questions import load_mcq_csv

    frame = load_mcq_csv(sample_rows(data, n, seed=0), require_answer=True)
    rows = []
    for _, row in frame.iterrows():
        ex = encode_training_example(tokenizer, row, max_prompt_tokens=512)
        rows.append({"input_ids": ex["input_ids"],
                     "labels": [-100 if m == 0 else t for t, m in zip(ex["input_ids"], ex["completion_mask"])]})
    return rows


def grouped_batches(rows: list[dict], micro: int, seed: int = 42) -> list[list[dict]]:
    """transformers' LengthGroupedSampler order: shuffled mega-batches of 50 micro-batches, sorted by length."""
    from transformers.trainer_pt_utils import get_length_grouped_indices
    import torch

    order = get_length_grouped_indices([len(r["input_ids"]) for r in rows], micro,
                                       generator=torch.Generator().manual_seed(seed))
    return [[rows[i] for i in order[k:k + micro]] for k in range(0, len(order) - micro + 1, micro)]


def gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def collate(batch: list[dict], pad_id: int):
    import torch

    width = max(len(r["input_ids"]) for r in batch)
    ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), -100)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, r in enumerate(batch):
        n = len(r["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def reference_model(model_path: str):
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    gpu = torch.cuda.is_available()  # on a CPU (the bench's own smoke test) without quantisation
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16) if gpu else None
    model = AutoModelForCausalLM.from_pretrained(model_path, quantization_config=quant,
                                                 dtype=torch.bfloat16 if gpu else torch.float32,
                                                 device_map={"": 0} if gpu else None)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, bias="none",
                                            task_type="CAUSAL_LM", target_modules=PROJECTIONS))


def result(name: str, step_seconds: list[float], step_tokens: list[int], samples_per_step: int, model) -> dict:
    from mcqtune.reporting.mfu import utilisation

    timed, tokens = step_seconds[WARMUP_STEPS:], step_tokens[WARMUP_STEPS:]
    tokens_per_s = sum(tokens) / sum(timed)
    mean_length = sum(tokens) / (samples_per_step * len(timed))
    return {"anchor": name, "card": card(), "timed_steps": len(timed), "samples_per_step": samples_per_step,
            "samples_per_s": round(samples_per_step * len(timed) / sum(timed), 3),
            "median_step_seconds": round(sorted(timed)[len(timed) // 2], 3),
            "real_tokens_per_s": round(tokens_per_s, 1), "mean_real_tokens_per_sample": round(mean_length, 1),
            **utilisation(tokens_per_s, model.config, training=True, sequence=round(mean_length)),
            "step_seconds": step_seconds, **peak_gb()}


def timed_training(trainer, accumulation: int) -> tuple[list[float], list[int]]:
    """Train, timing each optimiser step and counting the real (non-padding) tokens of its micro-batches."""
    from bench_14b import StepTimer

    timer, tokens, original = StepTimer(), [], trainer.training_step
    trainer.add_callback(timer.callback)

    def counting_step(model, inputs, *a, **k):
        mask = inputs.get("attention_mask")
        tokens.append(int(mask.sum()) if mask is not None else inputs["input_ids"].numel())
        return original(model, inputs, *a, **k)

    trainer.training_step = counting_step
    reset_peak()
    trainer.train()
    sync()
    steps = [e - s for s, e in zip(timer.starts, timer.ends)]
    return steps, [sum(tokens[i * accumulation:(i + 1) * accumulation]) for i in range(len(steps))]


def run_trainer_grouped(args) -> dict:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = reference_model(args.model)
    rows = encoded_rows(tokenizer, args.data, 32 * (args.steps + WARMUP_STEPS))
    dataset = Dataset.from_list([{"input_ids": r["input_ids"], "completion_mask": [int(x != -100) for x in r["labels"]]}
                                 for r in rows])
    config = SFTConfig(output_dir="/tmp/anchor_a", per_device_train_batch_size=4, gradient_accumulation_steps=8,
                       max_steps=args.steps + WARMUP_STEPS, learning_rate=2e-4, lr_scheduler_type="cosine",
                       warmup_steps=0.03, weight_decay=0.01, logging_steps=1, bf16=gpu(), report_to="none",
                       gradient_checkpointing=True, save_strategy="no", max_length=560, seed=42,
                       train_sampling_strategy="group_by_length", completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    steps, tokens = timed_training(trainer, accumulation=8)
    return result("trainer_grouped_4x8", steps, tokens, 32, model)


def run_plain_loop(args) -> dict:
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = reference_model(args.model)
    model.train()
    rows = encoded_rows(tokenizer, args.data, 32 * (args.steps + WARMUP_STEPS))
    micro_batches = grouped_batches(rows, 4)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4, weight_decay=0.01)
    steps, tokens = [], []
    reset_peak()
    for step in range(args.steps + WARMUP_STEPS):
        sync()
        started, real = time.perf_counter(), 0
        for batch in micro_batches[step * 8:(step + 1) * 8]:
            batch = {k: v.to(model.device) for k, v in collate(batch, tokenizer.pad_token_id).items()}
            real += int(batch["attention_mask"].sum())
            (model(**batch).loss / 8).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        steps.append(time.perf_counter() - started)
        tokens.append(real)
    return result("plain_loop_4x8", steps, tokens, 32, model)


def run_unsloth_notebook(args) -> dict:
    import unsloth  # noqa: F401  (before trl / transformers / peft)
    from unsloth import FastLanguageModel
    from unsloth.chat_templates import train_on_responses_only
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from mcqtune.data.questions import load_mcq_csv
    from mcqtune.model.prompts import build_messages, render_chat

    model, tokenizer = FastLanguageModel.from_pretrained(args.model, max_seq_length=2048, load_in_4bit=True,
                                                         dtype=None)
    model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16, lora_dropout=0, bias="none",
                                             target_modules=PROJECTIONS, use_gradient_checkpointing="unsloth",
                                             random_state=3407)
    frame = load_mcq_csv(sample_rows(args.data, 8 * (args.steps + WARMUP_STEPS), seed=0), require_answer=True)
    texts = [render_chat(tokenizer, build_messages(row, with_answer=True), add_generation_prompt=False)
             for _, row in frame.iterrows()]
    config = SFTConfig(output_dir="/tmp/anchor_c", per_device_train_batch_size=2, gradient_accumulation_steps=4,
                       max_steps=args.steps + WARMUP_STEPS, learning_rate=2e-4, warmup_steps=5, logging_steps=1,
                       optim="adamw_8bit" if gpu() else "adamw_torch", weight_decay=0.01, lr_scheduler_type="linear",
                       seed=3407, bf16=gpu(),
                       report_to="none", save_strategy="no", dataset_text_field="text", max_length=2048)
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=Dataset.from_dict({"text": texts}),
                         args=config)
    trainer = train_on_responses_only(trainer, instruction_part="<|im_start|>user\n",
                                      response_part="<|im_start|>assistant\n")
    steps, tokens = timed_training(trainer, accumulation=4)
    return result("unsloth_notebook_2x4", steps, tokens, 8, model)


RUNS = {"trainer-grouped": run_trainer_grouped, "plain-loop": run_plain_loop, "unsloth-notebook": run_unsloth_notebook}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("anchor", choices=sorted(RUNS))
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--json", required=True)
    parser.add_argument("--steps", type=int, default=16, help="timed optimiser steps after the warm-up")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    cap_memory()
    out = RUNS[args.anchor](args)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "step_seconds"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
