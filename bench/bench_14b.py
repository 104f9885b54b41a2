"""The 14B-shape model, the reference recipe, and the summary of the README commands' own measurements.

    python bench/bench_14b.py build --out /tmp/q14b                       # synthetic model, random bf16
    python bench/bench_14b.py reference --model /tmp/q14b --data train.csv --json ref.json
    python bench/bench_14b.py summarize-recipe OUT_FOLDER                 # -> bench/results.json

Our figures come from the README commands themselves (bench/run.sh runs them and keeps their
training_summary.json / report.json). Speed and memory do not depend on the weight values, so random
weights of the exact shape stand in for the real model. `reference` is the recipe we replace (plain
transformers + bitsandbytes NF4 double quant + peft, TRL's default full-vocabulary loss, per-device batch
4 x accumulation 8; batched HF generation), capped at 24 GiB like a 4090.
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


def load_nf4_model(path: str, **kwargs):
    """A model in 4-bit NF4 on GPU 0 with the config infer.py's hf backend loads with (model/options.py), for the
    generation comparisons: they measure the weights infer.py answers with."""
    import torch
    from transformers import AutoModelForCausalLM

    from mcqtune.model.options import quantization_config

    return AutoModelForCausalLM.from_pretrained(path, quantization_config=quantization_config(True, False, torch.bfloat16),
                                                dtype=torch.bfloat16, device_map={"": 0}, **kwargs)


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def sample_rows(data: str, n: int, seed: int = 0, out: Path | None = None) -> Path:
    """n rows drawn at random from the whole file (every length bucket), written as a CSV."""
    from mcqtune.data.questions import load_mcq_csv

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


# ---------------------------------------------------------------------------------------------- reference


def run_reference(args) -> dict:
    """The recipe we replace: HF + bnb NF4 (double quant) + peft, TRL's default loss; HF batched generation."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from mcqtune.data.questions import load_mcq_csv
    from mcqtune.model.prompts import build_sft_records, render_prompt

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


def _median(values):
    values = sorted(v for v in values if v is not None)
    return values[len(values) // 2] if len(values) % 2 else round(sum(values[len(values) // 2 - 1:][:2]) / 2, 3)


def _train_figures(summary: dict) -> dict:
    history = summary["log_history"]
    evals = [e for e in history if "eval_accuracy" in e]
    losses = [e["loss"] for e in history if "loss" in e]
    return {"steady_samples_per_s": summary.get("steady_train_samples_per_second"),
            "run_samples_per_s": summary.get("train_samples_per_second"),
            "warmup_seconds": summary.get("warmup_seconds"), "eval_seconds": summary.get("eval_seconds"),
            "save_seconds": summary.get("save_seconds"), "seconds": summary.get("seconds"),
            "eval_qps": [e.get("eval_samples_per_second") for e in evals],
            "eval_accuracy": [e["eval_accuracy"] for e in evals], "losses": losses,
            "peak_reserved_gb": summary.get("peak_gpu_memory_gb")}


def summarize_recipe(folder: str, out: Path) -> dict:
    """Keys from the recipe_h200x4_run1 call's outputs (bench/recipe.sh, superseded by bench/run.sh; in git
    history before 8c1b541): the README commands' own reports."""
    folder = Path(folder)

    def load(name):
        path = folder / name
        return json.loads(path.read_text()) if path.is_file() else None

    results: dict = {"card": (folder / "gpus.txt").read_text().splitlines()[0].split(",")[0]
                     if (folder / "gpus.txt").is_file() else None, "cap_gb": CAP_GB}
    ref = load("reference.json")
    if ref:
        results.update(ref_train_samples_per_s=ref["train"]["samples_per_s"],
                       ref_train_peak_reserved_gb=ref["train"].get("peak_reserved_gb"),
                       ref_gen_qps=ref["generate"]["48_tokens"]["qps"])
    runs = {name: load(f"train_{name}.json") for name in ("random", "grouped", "trl_loss", "16gb")}
    runs = {k: _train_figures(v) for k, v in runs.items() if v}
    results["train_runs"] = runs
    chosen = max((k for k in ("random", "grouped") if k in runs), key=lambda k: runs[k]["steady_samples_per_s"] or 0,
                 default=None)
    if chosen:
        results.update(recipe_train_batches=chosen,
                       recipe_train_samples_per_s=runs[chosen]["steady_samples_per_s"],
                       recipe_eval_qps=_median(runs[chosen]["eval_qps"]),
                       recipe_run_peak_reserved_gb=max(runs[k]["peak_reserved_gb"] or 0 for k in ("random", "grouped")
                                                       if k in runs))
    if "16gb" in runs:
        results.update(card16_peak_reserved_gb=runs["16gb"]["peak_reserved_gb"],
                       card16_train_samples_per_s=runs["16gb"]["steady_samples_per_s"])
    infers = [r for r in (load("infer_1.json"), load("infer_2.json")) if r]
    if infers:
        results.update(recipe_score_qps=_median([r["questions_per_second"] for r in infers]),
                       recipe_startup_s=_median([r["startup_seconds"] for r in infers]),
                       recipe_load_host_peak_gb=_median([r["cpu_peak_rss_gb"] for r in infers]),
                       recipe_infer_peak_reserved_gb=max(r.get("gpu_peak_reserved_gb", 0) for r in infers),
                       recipe_infer_batch_size=infers[0]["batch_size"], infer_runs=infers)
    learn = load("learn.json")
    if learn:
        results["learning_14b_val_accuracy"] = learn["best_eval_accuracy"]
        results["learning_14b_curve"] = _train_figures(learn)["eval_accuracy"]
    if chosen and ref:
        results["train_speedup"] = round(results["recipe_train_samples_per_s"] / results["ref_train_samples_per_s"], 2)
    if infers and ref:
        results["score_speedup_vs_ref_gen"] = round(results["recipe_score_qps"] / results["ref_gen_qps"], 1)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def _steady_without_resume(summary: dict, samples_per_step: int = 32) -> float | None:
    """Steady samples/s from a summary's per-step times, leaving out warm-up and the first step after each
    evaluation (summaries written before PhaseTimer reported those steps apart counted them as steady)."""
    steps = summary.get("step_seconds")
    if not steps:
        return None
    evals = {e["step"] for e in summary["log_history"] if "eval_accuracy" in e}
    steady = [t for i, t in enumerate(steps) if i >= 2 and i not in evals]  # step i + 1 follows step i's eval
    return round(samples_per_step * len(steady) / sum(steady), 3)


def _eval_qps(summary: dict) -> list[float]:
    return [e["eval_samples_per_second"] for e in summary["log_history"] if "eval_accuracy" in e]


# Result key -> (raw file under bench/raw/, the path of keys inside that JSON file; or "times.txt" and the two
# laps whose difference is the key). A list of such pairs gives a list of values. The calls of the session that
# restructured run identity, generation batches and k-fold (gen_h200 timed out during its generation run, so its
# generation figures come from gen2_h200, on the base model without an adapter).
TABLE = {
    "generate_14b_qps": ("gen2_h200/gen.json", ["questions_per_second"]),
    "generate_14b_steady_qps": ("gen2_h200/gen.json", ["answer_timing", "steady_questions_per_second"]),
    "generate_14b_batch_size": ("gen2_h200/gen.json", ["batch_size"]),
    "generate_14b_peak_reserved_gb": ("gen2_h200/gen.json", ["gpu_peak_reserved_gb"]),
    "generate_14b_peak_allocated_gb": ("gen2_h200/gen.json", ["gpu_peak_allocated_gb"]),
    "generate_14b_unparsed_rows": ("gen2_h200/gen.json", ["unparsed", "count"]),
    "score_14b_qps_gen_call": ("gen_h200/infer.json", ["questions_per_second"]),
    "score_14b_steady_qps_gen_call": ("gen_h200/infer.json", ["answer_timing", "steady_questions_per_second"]),
    "score_14b_batch_size_gen_call": ("gen_h200/infer.json", ["batch_size"]),
    "score_14b_peak_reserved_gb_gen_call": ("gen_h200/infer.json", ["gpu_peak_reserved_gb"]),
    "train_14b_6_steps_run_peak_reserved_gb_gen_call": ("gen_h200/b16.json", ["peak_gpu_memory_gb"]),
    "kfold_14b_seconds_per_fold": [("kfold_h200/kfold_fold0.json", ["seconds"]),
                                   ("kfold_h200/kfold_fold1.json", ["seconds"])],
    "kfold_14b_steps_per_fold": ("kfold_h200/kfold_fold0.json", ["steps"]),
    "kfold_14b_val_rows_per_fold": [("kfold_h200/kfold_fold0.json", ["val_rows"]),
                                    ("kfold_h200/kfold_fold1.json", ["val_rows"])],
    "kfold_14b_run_peak_reserved_gb_per_fold": [("kfold_h200/kfold_fold0.json", ["peak_gpu_memory_gb"]),
                                                ("kfold_h200/kfold_fold1.json", ["peak_gpu_memory_gb"])],
    "kfold_14b_fold_answer_seconds": [("kfold_h200/kfold_infer0.json", ["total_seconds"]),
                                      ("kfold_h200/kfold_infer1.json", ["total_seconds"])],
    "ensemble_14b_seconds": ("kfold_h200/times.txt", ["kfold_infer1", "kfold_ensemble"]),
    # the faithful anchors, each in a call with the README training command (20 steps; bench/run.sh)
    "ref_trainer_grouped_samples_per_s": ("anchors1_h200/anchor_a.json", ["samples_per_s"]),
    "ref_trainer_grouped_mfu": ("anchors1_h200/anchor_a.json", ["mfu"]),
    "ref_trainer_grouped_peak_reserved_gb": ("anchors1_h200/anchor_a.json", ["peak_reserved_gb"]),
    "ref_trainer_grouped_timed_steps": ("anchors1_h200/anchor_a.json", ["timed_steps"]),
    "ref_loop_samples_per_s": ("anchors2_h200/anchor_b.json", ["samples_per_s"]),
    "ref_loop_mfu": ("anchors2_h200/anchor_b.json", ["mfu"]),
    "ref_loop_peak_reserved_gb": ("anchors2_h200/anchor_b.json", ["peak_reserved_gb"]),
    "peer_unsloth_notebook_samples_per_s": ("anchors2_h200/anchor_c.json", ["samples_per_s"]),
    "peer_unsloth_notebook_mfu": ("anchors2_h200/anchor_c.json", ["mfu"]),
    "peer_unsloth_notebook_peak_reserved_gb": ("anchors2_h200/anchor_c.json", ["peak_reserved_gb"]),
    "recipe_train_samples_per_s_anchor_calls": [("anchors1_h200/b16.json", ["steady_train_samples_per_second"]),
                                                ("anchors2_h200/b16.json", ["steady_train_samples_per_second"])],
    "recipe_train_mfu": [("anchors1_h200/b16.json", ["train_mfu", "mfu"]),
                         ("anchors2_h200/b16.json", ["train_mfu", "mfu"])],
    "recipe_train_peak_reserved_gb_anchor_calls": [("anchors1_h200/b16.json", ["peak_gpu_memory_gb"]),
                                                   ("anchors2_h200/b16.json", ["peak_gpu_memory_gb"])],
    # Qwen3-14B's shape with configs/qwen3-14b-4090.yaml (20 steps) and the README inference command
    "qwen3_14b_train_samples_per_s": ("qwen3_h200/q3train.json", ["steady_train_samples_per_second"]),
    "qwen3_14b_run_peak_reserved_gb": ("qwen3_h200/q3train.json", ["peak_gpu_memory_gb"]),
    "qwen3_14b_train_mfu": ("qwen3_h200/q3train.json", ["train_mfu", "mfu"]),
    "qwen3_14b_answer_slot": ("qwen3_h200/q3train.json", ["answer_slot"]),
    "qwen3_14b_score_qps": ("qwen3_h200/q3infer.json", ["answer_timing", "steady_questions_per_second"]),
    "qwen3_14b_score_qps_whole_file": ("qwen3_h200/q3infer.json", ["questions_per_second"]),
    "qwen3_14b_score_peak_reserved_gb": ("qwen3_h200/q3infer.json", ["gpu_peak_reserved_gb"]),
    # bench/run.sh, 20 steps: RUNS="b16 b32 infer" (readme2), "card16 infer16 learn" (readme3), then "gen" on
    # card16's adapter (export2; its "export" run stopped: llama.cpp's converter is not in the GPU bundle)
    "readme_b16_samples_per_s": ("readme2_h200/b16.json", ["steady_train_samples_per_second"]),
    "readme_b16_mfu": ("readme2_h200/b16.json", ["train_mfu", "mfu"]),
    "readme_b16_peak_reserved_gb": ("readme2_h200/b16.json", ["peak_gpu_memory_gb"]),
    "readme_b32_samples_per_s": ("readme2_h200/b32.json", ["steady_train_samples_per_second"]),
    "readme_b32_mfu": ("readme2_h200/b32.json", ["train_mfu", "mfu"]),
    "readme_b32_peak_reserved_gb": ("readme2_h200/b32.json", ["peak_gpu_memory_gb"]),
    "readme_score_qps": ("readme2_h200/infer.json", ["answer_timing", "steady_questions_per_second"]),
    "readme_score_qps_whole_file": ("readme2_h200/infer.json", ["questions_per_second"]),
    "readme_score_startup_s": ("readme2_h200/infer.json", ["startup_seconds"]),
    "readme_score_mfu": ("readme2_h200/infer.json", ["score_mfu", "mfu"]),
    "readme_score_peak_reserved_gb": ("readme2_h200/infer.json", ["gpu_peak_reserved_gb"]),
    "readme_score_batch_size": ("readme2_h200/infer.json", ["batch_size"]),
    "card16_1gpu_samples_per_s": ("readme3_h200/card16.json", ["steady_train_samples_per_second"]),
    "card16_1gpu_peak_reserved_gb": ("readme3_h200/card16.json", ["peak_gpu_memory_gb"]),
    "infer16_qps_whole_file": ("readme3_h200/infer16.json", ["questions_per_second"]),
    "infer16_startup_s": ("readme3_h200/infer16.json", ["startup_seconds"]),
    "infer16_cgroup_memory_peak_bytes": ("readme3_h200/infer16.cgroup.txt", ["memory.peak"]),
    "infer16_cgroup_oom_kills": ("readme3_h200/infer16.cgroup.txt", ["memory.events", "oom_kill"]),
    "learn_14b_final_eval_accuracy": ("readme3_h200/learn.json", ["final_eval_accuracy"]),
    "learn_14b_samples_per_s": ("readme3_h200/learn.json", ["steady_train_samples_per_second"]),
    "generate_adapter_qps_whole_file": ("export2_h200/gen.json", ["questions_per_second"]),
    "generate_adapter_steady_qps": ("export2_h200/gen.json", ["answer_timing", "steady_questions_per_second"]),
    "generate_adapter_peak_reserved_gb": ("export2_h200/gen.json", ["gpu_peak_reserved_gb"]),
    "generate_adapter_unparsed_rows": ("export2_h200/gen.json", ["unparsed", "count"]),
    # after the restructure (model_options.py, infer_loading.py, ...): RUNS="b16 infer16 export", 6 steps
    "refactor_b16_samples_per_s": ("refactor_h200/b16.json", ["steady_train_samples_per_second"]),
    "refactor_b16_peak_reserved_gb": ("refactor_h200/b16.json", ["peak_gpu_memory_gb"]),
    "infer16_cold_startup_s": ("refactor_h200/infer16.json", ["startup_seconds"]),
    "infer16_cold_steady_qps": ("refactor_h200/infer16.json", ["answer_timing", "steady_questions_per_second"]),
    "infer16_cold_score_mfu": ("refactor_h200/infer16.json", ["score_mfu", "mfu"]),
    "infer16_cold_cpu_peak_anon_gb": ("refactor_h200/infer16.json", ["cpu_peak_anon_gb"]),
    "infer16_cold_cgroup_memory_peak_bytes": ("refactor_h200/infer16.cgroup.txt", ["memory.peak"]),
    "infer16_cold_cgroup_max_events": ("refactor_h200/infer16.cgroup.txt", ["memory.events", "max"]),
    "infer16_cold_cgroup_oom_kills": ("refactor_h200/infer16.cgroup.txt", ["memory.events", "oom_kill"]),
    "export_merged_14b_seconds": ("refactor_h200/times.txt", ["infer16", "export"]),
    # GRPO (session 12): train_grpo.py with the shipped 24 GB configs from the base, replies forced to their length
    "grpo_14b_seconds_per_step": ("grpo_h200/grpo.json", ["steady_seconds_per_step"]),
    "grpo_14b_peak_reserved_gb": ("grpo_h200/grpo.json", ["peak_gpu_memory_gb"]),
    "grpo_14b_rollout_tokens_per_s": ("grpo_h200/grpo.json", ["rollout_tokens_per_second"]),
    "grpo_14b_warmup_seconds": ("grpo_h200/grpo.json", ["warmup_seconds"]),
    "grpo_14b_eval_seconds": ("grpo_h200/grpo.json", ["eval_seconds"]),
    "grpo_reason_14b_second_step_seconds": ("grpo2_h200/grpo_reason.json", ["step_seconds", 1]),
    "grpo_reason_14b_rollout_tokens_per_s": ("grpo2_h200/grpo_reason.json", ["rollout_tokens_per_second"]),
    "grpo_reason_14b_peak_reserved_gb": ("grpo2_h200/grpo_reason.json", ["peak_gpu_memory_gb"]),
    "reason_14b_static_cache_plain_generate_tokens_per_s": ("grpo2_h200/static512.json", ["tokens_per_s"]),
    # the Chinese model zoo: bench/run.sh RUNS=glm4 (20 steps, the 1,839-question file) and RUNS=qwen3_5 (12 steps,
    # the first 600 questions), the README's 4090 commands at GLM-4-9B-0414's and Qwen3.5-9B's shapes, Unsloth
    "glm4_9b_train_samples_per_s": ("zoo_glm4_h200/glm4_train.json", ["steady_train_samples_per_second"]),
    "glm4_9b_train_peak_gb": ("zoo_glm4_h200/glm4_train.json", ["peak_gpu_memory_gb"]),
    "glm4_9b_score_qps": ("zoo_glm4_h200/glm4_infer.json", ["answer_timing", "steady_questions_per_second"]),
    "glm4_9b_score_peak_reserved_gb": ("zoo_glm4_h200/glm4_infer.json", ["gpu_peak_reserved_gb"]),
    "qwen3_5_train_samples_per_s": ("zoo_qwen3_5_h200/qwen3_5_train.json", ["steady_train_samples_per_second"]),
    "qwen3_5_train_warmup_seconds": ("zoo_qwen3_5_h200/qwen3_5_train.json", ["warmup_seconds"]),
    "qwen3_5_train_peak_gb": ("zoo_qwen3_5_h200/qwen3_5_train.json", ["peak_gpu_memory_gb"]),
    "qwen3_5_score_qps": ("zoo_qwen3_5_h200/qwen3_5_infer.json", ["answer_timing", "steady_questions_per_second"]),
    "qwen3_5_score_peak_reserved_gb": ("zoo_qwen3_5_h200/qwen3_5_infer.json", ["gpu_peak_reserved_gb"]),
    "qwen3_5_shared_prefix": ("zoo_qwen3_5_h200/qwen3_5_infer.json", ["shared_prefix"]),
    # --generation_engine continuous (session 14): bench/run.sh RUNS="creason512 creason2048" (creason/), then
    # creason512 again with the cache never over-committed (creason_b/, the code as landed); bench/continuous_generate.py
    # on the same NF4 weights: CUDA graphs off and on (cb2/), 128 x 512 with graphs off (cb1/)
    "reason_14b_continuous_peak_reserved_gb": ("continuous_h200/creason_b/creason512.json", ["gpu_peak_reserved_gb"]),
    "reason_14b_continuous_batch_size_512": ("continuous_h200/creason_b/creason512.json", ["batch_size"]),
    "reason_14b_continuous_batch_size_2048": ("continuous_h200/creason/creason2048.json", ["batch_size"]),
    "continuous_14b_tokens_per_s_64x128_no_graphs": ("continuous_h200/cb2/cb.json", ["runs", 1, "tokens_per_s"]),
    "continuous_14b_tokens_per_s_64x128_graphs": ("continuous_h200/cb2/cb.json", ["runs", 2, "tokens_per_s"]),
    "continuous_14b_tokens_per_s_128x256_graphs": ("continuous_h200/cb2/cb.json", ["runs", 5, "tokens_per_s"]),
    "continuous_14b_tokens_per_s_128x512_no_graphs": ("continuous_h200/cb1/cb.json", ["runs", 1, "tokens_per_s"]),
}
ZOO_SIZES = {"qwen3_5_size": "Qwen3.5-9B (text model, 8.95B parameters)", "glm4_9b_size": "GLM-4-9B-0414 (9.40B)"}
GRPO_KEYS = [k for k in TABLE if k.startswith("grpo") or "static_cache" in k]

RTX_4090_OVER_H200 = 165.2 / 989.4  # dense BF16 peaks (mfu.py's sources): the projection's scale


def score_mfu(raw: Path, report: str, tokens: str, config) -> float:
    """Scoring MFU of a recorded report.json whose call predates infer.py's own score_mfu: its steady rate x
    the computed tokens per question (prompt less the shared prefix; score_tokens.json, computed afterwards)."""
    from mcqtune.reporting.mfu import utilisation

    qps = json.loads((raw / report).read_text())["answer_timing"]["steady_questions_per_second"]
    counts = json.loads((raw / tokens).read_text())
    return utilisation(qps * counts["computed_tokens_per_question"], config, training=False,
                       sequence=round(counts["mean_prompt_tokens"]), device_name="NVIDIA H200")["mfu"]


def derived_anchor_keys(r: dict, raw: Path) -> dict:
    """Ratios against the anchors (each against the README command of its own call), scoring MFU of the recorded
    scoring runs, and the 4090 projection: the H200 rate x the ratio of the dense BF16 peaks (same MFU assumed)."""
    from mcqtune.tiny.families import build_family_config
    from mcqtune.tiny.qwen import build_model_config

    ours_a, ours_bc = r["recipe_train_samples_per_s_anchor_calls"]
    keys = {"train_speedup_vs_ref_trainer_grouped": round(ours_a / r["ref_trainer_grouped_samples_per_s"], 2),
            "train_speedup_vs_ref_loop": round(ours_bc / r["ref_loop_samples_per_s"], 2),
            "train_speedup_vs_unsloth_notebook": round(ours_bc / r["peer_unsloth_notebook_samples_per_s"], 2)}
    projected = {"recipe_train_samples_per_s": _median(r["recipe_train_samples_per_s_anchor_calls"]),
                 "ref_trainer_grouped_samples_per_s": r["ref_trainer_grouped_samples_per_s"],
                 "recipe_score_qps": r["recipe_score_qps"]}
    keys["rtx4090_projection_same_mfu"] = {k: round(v * RTX_4090_OVER_H200, 2) for k, v in projected.items()}
    keys["recipe_score_mfu"] = score_mfu(raw, "gen_h200/infer.json", "gen_h200/score_tokens.json",
                                         build_model_config("qwen2.5-14b"))
    keys["qwen3_14b_score_mfu"] = score_mfu(raw, "qwen3_h200/q3infer.json", "qwen3_h200/score_tokens.json",
                                            build_family_config("qwen3", "qwen3-14b"))
    for family in ("glm4_9b", "qwen3_5"):  # a run's peak: training's or answering's, whichever is higher
        keys[f"{family}_run_peak_reserved_gb"] = max(r[f"{family}_train_peak_gb"], r[f"{family}_score_peak_reserved_gb"])
    keys.update(ZOO_SIZES)
    keys.update(continuous_keys(raw / "continuous_h200"))
    keys.update(fast_keys(raw))
    keys.update(decode_profile_keys(raw))
    keys.update(levers_keys(raw))
    return keys


LEVER_CALLS = ("levers_h100",)  # session 21, one H100 (24 GiB cap): see levers_keys


def levers_keys(raw: Path) -> dict:
    """Session 21's levers on the README's reasoning command (continuous engine, varlen attention, 64-token cache
    blocks, 128 questions x 512 tokens), each beside the command without it in the same call: ``--async_batching
    true`` (levers_h100); ``--kv_cache_dtype fp8``, without and with overlapped steps (later calls). Generated
    tokens per second over the answering seconds, peak reserved memory, and how many of the 128 letters the two
    runs share (random weights: nearly tied scores, so any change of kernel order can change a reply)."""
    keys = {}
    for call in LEVER_CALLS:
        folder = raw / call
        if not folder.is_dir():
            continue
        card = (folder / "gpu.txt").read_text().splitlines()[1].split(",")[0]
        rates = {}
        for name in ("vreason512", "areason512", "kvreason512", "akvreason512"):
            if (folder / f"{name}.json").is_file():
                r = json.loads((folder / f"{name}.json").read_text())
                rates[name] = round(r["reasoning"]["generated_tokens"] / r["seconds"], 1)
                keys[f"levers_{name}_{call}"] = {"tokens_per_s": rates[name], "card": card,
                                                 "peak_reserved_gb": r["gpu_peak_reserved_gb"]}
        for name in ("areason512", "kvreason512", "akvreason512"):
            if name in rates and "vreason512" in rates:
                keys[f"levers_{name}_over_vreason512_{call}"] = round(rates[name] / rates["vreason512"], 3)
                letters = [(folder / f"{n}.csv").read_text().splitlines()[1:] for n in ("vreason512", name)]
                keys[f"levers_{name}_letters_same_as_vreason512_{call}"] = \
                    f"{sum(a == b for a, b in zip(*letters))} of {len(letters[0])}"
    return keys


def decode_profile_keys(raw: Path) -> dict:
    """Session 18, one H100 (24 GiB cap for the engine): continuous batching's decoding at the 14B shape with and
    without the fused NF4 kernel (71 replies x 128 forced tokens, CUDA graphs), the GPU's busy share of that run
    under torch.profiler, and a decoding step's linear layers summed from the per-layer kernel check (ms,
    bitsandbytes against the kernel, each call replayed as a CUDA graph)."""
    runs = {r["spec"]: r for r in json.loads((raw / "prof_h100" / "cb.json").read_text())["runs"]}
    check = json.loads((raw / "nf4c_h100" / "nf4check.json").read_text())
    return {"decode_profile_card": check["card"],
            "decode_71x128_continuous_tokens_per_s_h100": runs["71x128:graphs"]["tokens_per_s"],
            "decode_71x128_nf4_kernel_tokens_per_s_h100": runs["71x128:graphs:nf4"]["tokens_per_s"],
            "decode_71x128_gpu_busy_share_profiled_h100": runs["71x128:graphs:profile"]["gpu_busy_share"],
            "nf4_linear_layers_per_step_ms_h100": {
                tokens: {"bitsandbytes": s["bitsandbytes_graph_ms"], "kernel": s["codes_graph_ms"]}
                for tokens, s in check["linear_layers_per_step_ms"].items()}}


FAST_CALLS = ("varlen_h100", "fp8varlen_h100")  # session 19, one H100 (24 GiB cap): see fast_keys


def fast_keys(raw: Path) -> dict:
    """The fast engine: the README's reasoning command on --generation_engine continuous with varlen attention
    (``--paged_attention auto``), 128 questions x 512 tokens beside the same command with transformers' paged SDPA
    in the same call (varlen_h100), and 32 questions x 2,048 tokens (fp8varlen_h100, the machine kept warm from
    the first call); FP8 weights with varlen in that second call. Generated tokens per second over the answering
    seconds, seconds per question, peak reserved memory; the card each call ran on."""
    if not all((raw / call).is_dir() for call in FAST_CALLS):
        return {}

    def read(call, name):
        return json.loads((raw / call / f"{name}.json").read_text())

    keys = {"reason_14b_fast_card": (raw / FAST_CALLS[0] / "gpu.txt").read_text().splitlines()[1].split(",")[0]}
    for call, name, key in ((FAST_CALLS[0], "vreason512", "reason_14b_fast_tokens_per_s_512"),
                            (FAST_CALLS[1], "vreason2048", "reason_14b_fast_tokens_per_s_2048"),
                            (FAST_CALLS[0], "creason512", "reason_14b_continuous_sdpa_same_call_tokens_per_s_512"),
                            (FAST_CALLS[1], "fvreason512", "reason_14b_fp8_varlen_tokens_per_s_512")):
        r = read(call, name)
        keys[key] = round(r["reasoning"]["generated_tokens"] / r["seconds"], 1)
        keys[key.replace("tokens_per_s", "seconds_per_question")] = round(r["seconds"] / r["rows"], 3)
        keys[key.replace("tokens_per_s", "peak_reserved_gb")] = r["gpu_peak_reserved_gb"]
    keys["reason_14b_fast_peak_reserved_gb"] = max(keys["reason_14b_fast_peak_reserved_gb_512"],
                                                   keys["reason_14b_fast_peak_reserved_gb_2048"])
    check = read(FAST_CALLS[0], "varlencheck")
    keys["varlen_attention_per_step_ms_h100"] = {  # 48 layers, bfloat16, keys read in place from the paged cache
        step["step"]: {"varlen": step["varlen_in_place_step_ms"], "dense_paged_sdpa": step["dense_sdpa_step_ms"]}
        for step in check["steps"]}
    keys["varlen_kernel_max_abs_diff_vs_float32"] = max(step["max_abs_diff_vs_float32"] for step in check["steps"])
    return keys


def continuous_keys(raw: Path) -> dict:
    """Generated tokens per second of the README's reasoning command on the continuous engine: every reply's tokens
    over the answering seconds (its one batch, CUDA graphs captured and the closed replies scored included)."""
    def rate(report):
        r = json.loads((raw / report).read_text())
        return round(r["reasoning"]["generated_tokens"] / r["seconds"], 1)

    return {"reason_14b_continuous_tokens_per_s_512": rate("creason_b/creason512.json"),
            "reason_14b_continuous_tokens_per_s_512_first_call": rate("creason/creason512.json"),
            "reason_14b_continuous_tokens_per_s_2048": rate("creason/creason2048.json")}


def read_cgroup(text: str) -> dict:
    """run.sh's infer16.cgroup.txt: "== memory.peak" then its value, or "key value" lines (memory.events)."""
    files, name = {}, None
    for line in text.splitlines():
        if line.startswith("== "):
            name = line[3:]
            files[name] = {}
        elif name and line.strip():
            parts = line.split()
            if len(parts) == 1:
                files[name] = int(parts[0]) if parts[0].isdigit() else parts[0]
            elif isinstance(files[name], dict):
                files[name][parts[0]] = int(parts[1]) if parts[1].isdigit() else parts[1]
    return files


def read_table(raw: Path, table: dict = TABLE) -> dict:
    """The values TABLE names, read from the raw files."""
    def one(spec):
        name, keys = spec
        if name.endswith("times.txt"):
            laps = {line.split(" after ")[0]: int(line.split(" after ")[1].split()[0])
                    for line in (raw / name).read_text().splitlines() if " after " in line}
            return laps[keys[1]] - laps[keys[0]]
        text = (raw / name).read_text()
        value = read_cgroup(text) if name.endswith(".cgroup.txt") else json.loads(text)
        for key in keys:
            value = value[key]
        return value

    return {key: [one(s) for s in spec] if isinstance(spec, list) else one(spec) for key, spec in table.items()}


def collect(raw: Path, out: Path) -> dict:
    """bench/results.json from the recorded calls (raw files in bench/raw/): the README commands on one-GPU
    H200 machines with nothing else on them (the training recipe as it stands: readme_train_h200 and the three
    microbatch*_h200 calls, each beside the reference; batch orders: sampling*_h200; host memory at load:
    host16_h200; random batches and inference: three calls of the first session, the reference recipe in two of
    them), and the earlier 4 x H200 calls for the 16 GB recipe, learning at 14B and several GPUs. Ratios use the
    reference measured in the same call; every key says where it comes from."""
    def loss_curve(summary):
        evals = [round(e["eval_loss"], 4) for e in summary["log_history"] if "eval_loss" in e]
        return {"eval_loss": evals, "train_loss": [round(e["loss"], 3) for e in summary["log_history"] if "loss" in e]}

    def load(path):
        return json.loads((raw / path).read_text())

    final = {n: load(f"readme_1gpu_h200/{n}.json") for n in ("train", "infer", "reference")}
    diag = {n: load(f"diagnose_h200/{n}.json") for n in ("train_readme", "train_noeval", "infer", "reference")}
    recomp = {n: load(f"recompile_h200/{n}.json") for n in ("train_readme", "train_compiled_eval", "infer",
                                                            "infer_eager")}
    readme_trains = [final["train"], diag["train_readme"], recomp["train_readme"]]
    infers = [final["infer"], diag["infer"], recomp["infer"]]
    recipe = summarize_recipe(str(raw / "recipe_h200x4_run1"), raw / "recipe_h200x4_run1" / "summary.json")
    scale = {n: load(f"scale_h200x4/{n}.json") for n in ("train_1gpu", "train_2node", "train_4gpu", "infer_1gpu_1",
                                                         "infer_4gpu", "reference")}
    ident = {n: load(f"identity_h200x4/{n}.json") for n in ("report_one_run", "report_two_run", "report_node0")}
    identical = (raw / "identity_h200x4" / "identical.txt").read_text()
    one_gpu_train = scale["train_1gpu"]["steady_train_samples_per_second"]
    one_gpu_score = scale["infer_1gpu_1"]["questions_per_second"]
    first_evals = [_eval_qps(t)[0] for t in readme_trains]
    later_evals = [q for t in readme_trains for q in _eval_qps(t)[1:]]
    now = {n: load(f"readme_train_h200/{n}.json") for n in ("train", "reference")}
    grouped = {n: load(f"sampling2_h200/{n}.json") for n in ("train_group_by_length", "train_batch_rebalance",
                                                              "reference")}
    orders = {n: load(f"sampling_h200/train_{n}.json") for n in ("random", "batch_rebalance")}
    # the 4090 config as it stands (16 x 2, grouped, embedding in host RAM) beside the reference, four calls
    micro = {c: {n: load(f"{c}/{n}.json") for n in names} for c, names in
             (("microbatch_h200", ("b16", "b32", "ref")), ("microbatch2_h200", ("b16", "ref", "infer")),
              ("microbatch3_h200", ("b16", "b32", "ref")))}
    recipe_calls = [(now["train"], now["reference"])] + [(m["b16"], m["ref"]) for m in micro.values()]

    def speedup(train, ref):
        return round(train["steady_train_samples_per_second"] / ref["train"]["samples_per_s"], 2)

    speedups = [speedup(t, r) for t, r in recipe_calls]
    b32_calls = [(m["b32"], m["ref"], m["b16"]) for m in micro.values() if "b32" in m]
    host16 = load("host16_h200/infer16.json")
    host16_cgroup = (raw / "host16_h200" / "cgroup.txt").read_text().split()
    same_call = micro["microbatch2_h200"]

    def median_step(summary):
        return _median(summary["step_seconds"][2:])

    results = {
        "card": "NVIDIA H200 (one-GPU machines, nothing else running), every process capped at 24 GiB (15 GiB for "
                "card16*); card16_samples/peak keys without _1gpu, learning_*, two_*, scale4_*: 4 x H200 machines",
        "date": "2026-11-29 to 2026-12-01 (each call's date: bench/RESULTS.md)",
        "gb_unit": "GiB (2^30 bytes), as torch.cuda.max_memory_reserved() / 2**30",
        "recipe_train_samples_per_s": _median([t["steady_train_samples_per_second"] for t, _ in recipe_calls]),
        "ref_train_samples_per_s": _median([r["train"]["samples_per_s"] for _, r in recipe_calls]),
        "recipe_train_config": "configs/qwen2.5-14b-4090.yaml: micro-batch 16 x 2, group_by_length batches, "
                               "offload_embedding",
        "recipe_train_calls": ["readme_train_h200", *micro],
        "recipe_train_samples_per_s_all_calls": [t["steady_train_samples_per_second"] for t, _ in recipe_calls],
        "ref_train_samples_per_s_all_calls": [r["train"]["samples_per_s"] for _, r in recipe_calls],
        "train_speedup_all_calls": speedups,
        "train_speedup_median": _median(speedups),
        "train_calls_note": "the config as it stands, each beside the reference in the same call; recipe_ and "
                            "ref_train_samples_per_s are the medians over these calls, train_speedup the median "
                            "of the per-call ratios",
        "grouped_embedding_on_gpu_call": {"call": "sampling2_h200",
                                          "samples_per_s": grouped["train_group_by_length"][
                                              "steady_train_samples_per_second"],
                                          "ref_samples_per_s": grouped["reference"]["train"]["samples_per_s"]},
        "microbatch32_train_samples_per_s_all_calls": [t["steady_train_samples_per_second"] for t, _, _ in b32_calls],
        "microbatch32_ref_train_samples_per_s_all_calls": [r["train"]["samples_per_s"] for _, r, _ in b32_calls],
        "microbatch32_train_speedup_all_calls": [speedup(t, r) for t, r, _ in b32_calls],
        "microbatch32_run_peak_reserved_gb": max(t["peak_gpu_memory_gb"] for t, _, _ in b32_calls),
        "microbatch32_run_peak_allocated_gb": max(max(t["peak_allocated_gb_by_phase"].values())
                                                  for t, _, _ in b32_calls),
        "microbatch32_loss": loss_curve(b32_calls[0][0]),
        "microbatch32_note": "the 4090 config with --per_device_train_batch_size 32 --gradient_accumulation_steps 1 "
                             "(same 32 questions per step), beside the config (16 x 2) and the reference",
        "median_step_seconds_16x2_vs_32x1_same_call": [[median_step(b16), median_step(t)] for t, _, b16 in b32_calls],
        "samples_per_s_by_batch_order": {
            "sampling_h200": {n: t["steady_train_samples_per_second"] for n, t in orders.items()},
            "sampling2_h200": {"group_by_length": grouped["train_group_by_length"]["steady_train_samples_per_second"],
                               "batch_rebalance": grouped["train_batch_rebalance"]["steady_train_samples_per_second"]}},
        "loss_by_batch_order": {"random": loss_curve(orders["random"]),
                                "batch_rebalance": loss_curve(orders["batch_rebalance"]),
                                "group_by_length": loss_curve(grouped["train_group_by_length"]),
                                "group_by_length_offload_embedding": loss_curve(now["train"])},
        "run_peak_reserved_gb_by_batch_order_embedding_on_gpu": {
            "random": orders["random"]["peak_gpu_memory_gb"],
            "batch_rebalance": orders["batch_rebalance"]["peak_gpu_memory_gb"],
            "group_by_length": grouped["train_group_by_length"]["peak_gpu_memory_gb"]},
        "random_batches_train_samples_per_s_all_calls": [_steady_without_resume(t) for t in readme_trains],
        "random_batches_ref_train_samples_per_s_all_calls": [final["reference"]["train"]["samples_per_s"],
                                                             diag["reference"]["train"]["samples_per_s"]],
        "random_batches_train_speedup_all_calls": [round(_steady_without_resume(final["train"]) /
                                                         final["reference"]["train"]["samples_per_s"], 2),
                                                   round(_steady_without_resume(diag["train_readme"]) /
                                                         diag["reference"]["train"]["samples_per_s"], 2)],
        "no_eval_run_samples_per_s": diag["train_noeval"]["steady_train_samples_per_second"],
        "recipe_warmup_seconds": now["train"]["warmup_seconds"],
        "resume_step_seconds_compiled_eval": [diag["train_readme"]["step_seconds"][12],
                                              recomp["train_compiled_eval"]["step_seconds"][4]],
        "resume_step_seconds_eager_eval": [final["train"]["step_seconds"][12], recomp["train_readme"]["step_seconds"][12]],
        "recipe_eval_qps": _median(later_evals),
        "recipe_eval_qps_first_pass": _median(first_evals),
        "recipe_eval_qps_note": "random-batch calls of the first session, the same calls as recipe_score_qps",
        "eval_vs_infer_same_call_config_as_it_stands": {
            "call": "microbatch2_h200", "eval_qps_later_pass": _eval_qps(same_call["b16"])[1],
            "infer_steady_qps": same_call["infer"]["answer_timing"]["steady_questions_per_second"],
            "ratio": round(_eval_qps(same_call["b16"])[1]
                           / same_call["infer"]["answer_timing"]["steady_questions_per_second"], 2)},
        "eval_qps_later_pass_since_second_session": [q for t in (now["train"], *orders.values(), *list(grouped.values())[:2],
                                                         *(m[n] for m in micro.values() for n in ("b16", "b32") if n in m))
                                             for q in _eval_qps(t)[1:]],
        "recipe_run_peak_reserved_gb": now["train"]["peak_gpu_memory_gb"],
        "recipe_run_peak_allocated_gb": max(now["train"]["peak_allocated_gb_by_phase"].values()),
        "recipe_run_peak_reserved_gb_by_phase": now["train"]["peak_reserved_gb_by_phase"],
        "recipe_embedding_on_host": now["train"]["embedding_on_host"],
        "recipe_score_qps": final["infer"]["answer_timing"]["steady_questions_per_second"],
        "recipe_score_qps_all_calls": [r["answer_timing"]["steady_questions_per_second"] for r in infers],
        "recipe_score_whole_phase_qps": final["infer"]["questions_per_second"],
        "recipe_score_whole_phase_qps_all_calls": [r["questions_per_second"] for r in infers],
        "recipe_score_first_batches_seconds": final["infer"]["answer_timing"]["warmup_seconds"],
        "recipe_score_batch_size": final["infer"]["batch_size"],
        "recipe_infer_peak_reserved_gb": final["infer"]["gpu_peak_reserved_gb"],
        "eager_score_qps": recomp["infer_eager"]["answer_timing"]["steady_questions_per_second"],
        "ref_gen_qps": final["reference"]["generate"]["48_tokens"]["qps"],
        "ref_gen_qps_all_calls": [final["reference"]["generate"]["48_tokens"]["qps"],
                                  diag["reference"]["generate"]["48_tokens"]["qps"]],
        "recipe_startup_s": _median([r["startup_seconds"] for r in infers]),
        "recipe_load_host_peak_gb": host16["cpu_peak_rss_gb"],
        "recipe_load_host_note": "peak resident set of the README inference command (16-bit weights quantised at "
                                 "load) run inside a cgroup with memory.max=16G and no swap, page cache dropped "
                                 "before (host16_h200): it finished with no OOM, the weight files' pages reclaimed "
                                 "as read; without a limit the mapped files stay cached and count in the RSS",
        "load_host_16gib_cgroup": {"exit": host16_cgroup[1], "memory_peak_bytes": int(host16_cgroup[
                                       host16_cgroup.index("memory.peak") + 1]),
                                   "oom_kill": int(host16_cgroup[host16_cgroup.index("oom_kill") + 1]),
                                   "anon_gb": host16["cpu_peak_anon_gb"], "startup_s": host16["startup_seconds"],
                                   "steady_qps_base_model": host16["answer_timing"]["steady_questions_per_second"]},
        "load_host_peak_rss_gb_unlimited": _median([r["cpu_peak_rss_gb"] for r in infers]),
        "load_host_anon_gb_unlimited": same_call["infer"]["cpu_peak_anon_gb"],
        "recipe_score_qps_third_session": same_call["infer"]["answer_timing"]["steady_questions_per_second"],
        "nf4_base_load_host_peak_gb": load("recipe_h200x4_run1/infer_nf4.json")["cpu_peak_rss_gb"],
        "nf4_base_startup_s": load("recipe_h200x4_run1/infer_nf4.json")["startup_seconds"],
        "card16_peak_reserved_gb": recipe["card16_peak_reserved_gb"],
        "card16_train_samples_per_s": recipe["card16_train_samples_per_s"],
        "learning_14b_val_accuracy": recipe["learning_14b_val_accuracy"],
        "learning_14b_curve": recipe["learning_14b_curve"],
        "trl_loss_samples_per_s_x4_call": recipe["train_runs"]["trl_loss"]["steady_samples_per_s"],
        "answer_only_loss_samples_per_s_x4_call": recipe["train_runs"]["random"]["steady_samples_per_s"],
        "group_by_length_samples_per_s_x4_call": recipe["train_runs"]["grouped"]["steady_samples_per_s"],
        "x4_calls_note": "x4 training figures were taken before the first step after an evaluation was reported "
                         "apart: their 'steady' rate includes one 14-32 s step; compare them only with each other",
        "two_gpu_submission_identical": "two_gpu_submission_identical true" in identical,
        "two_node_submission_identical": "two_node_submission_identical true" in identical,
        "two_node_train_samples_per_s": scale["train_2node"]["steady_train_samples_per_second"],
        "two_node_train_efficiency": round(scale["train_2node"]["steady_train_samples_per_second"] / (2 * one_gpu_train), 3),
        "two_node_score_qps_base_model": ident["report_node0"]["questions_per_second"],
        "two_gpu_score_qps_base_model": ident["report_two_run"]["questions_per_second"],
        "one_gpu_score_qps_base_model": ident["report_one_run"]["questions_per_second"],
        "scale4_train_samples_per_s": scale["train_4gpu"]["steady_train_samples_per_second"],
        "scale4_train_efficiency": round(scale["train_4gpu"]["steady_train_samples_per_second"] / (4 * one_gpu_train), 3),
        "scale4_score_qps": scale["infer_4gpu"]["questions_per_second"],
        "scale4_score_efficiency": round(scale["infer_4gpu"]["questions_per_second"] / (4 * one_gpu_score), 3),
    }
    results["train_speedup"] = results["train_speedup_median"]
    results["score_speedup_vs_ref_gen"] = round(results["recipe_score_qps"] / results["ref_gen_qps"], 1)
    results["score_whole_phase_speedup_vs_ref_gen"] = round(results["recipe_score_whole_phase_qps"]
                                                            / results["ref_gen_qps"], 1)
    results.update(read_table(raw))
    results.update(derived_anchor_keys(results, raw))
    kept = json.loads(out.read_text()) if out.is_file() else {}  # keys other entries write (cpu_*.py, by hand)
    results = {**kept, **results}
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build")
    build.add_argument("--out", required=True)
    build.add_argument("--tokenizer", default=None, help="saved tokenizer to copy (default: build it)")
    for name in ("reference",):
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
    sub.add_parser("collect", help="bench/results.json from the recorded calls in bench/raw/")
    summary = sub.add_parser("summarize-recipe", help="keys from a recipe_h200x4-style output folder")
    summary.add_argument("folder")
    summary.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.command == "build":
        import torch

        from mcqtune.tiny.qwen import write_tiny_qwen

        started = time.perf_counter()
        torch.set_default_dtype(torch.bfloat16)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer) if args.tokenizer else None
        write_tiny_qwen(args.out, shape="qwen2.5-14b", dtype="bfloat16", tokenizer=tokenizer)
        print(f"built {args.out} in {time.perf_counter() - started:.0f} s")
        return 0
    if args.command == "collect":
        print(json.dumps(collect(ROOT / "bench" / "raw", ROOT / "bench" / "results.json"), indent=1))
        return 0
    if args.command == "summarize-recipe":
        print(json.dumps({k: v for k, v in summarize_recipe(args.folder, Path(args.out)).items()
                          if not isinstance(v, (dict, list))}, indent=1))
        return 0
    result = run_reference(args)
    if int(os.environ.get("RANK", 0)) != 0:
        return 0
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
