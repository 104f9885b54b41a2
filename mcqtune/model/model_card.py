"""The model card (README.md) of every export: base model, weights' dtype, LoRA settings, training data and
validation accuracy, the prompt format and how to load it.

What training left beside the adapter says what the card can state: the run's ``training_summary.json`` (one
folder up) and, for a ``checkpoint-*``, its ``trainer_state.json`` (the step and its validation accuracy).
"""

from __future__ import annotations

import json
from pathlib import Path

from mcqtune.data.questions import DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_TEMPLATE


def training_facts(adapter_dir: Path) -> dict:
    """What the model card says about training: the run's summary (beside adapter/ or checkpoint-*) and,
    for a checkpoint, the validation accuracy at that step."""
    facts: dict = {"lora": json.loads((adapter_dir / "adapter_config.json").read_text())}
    summary_file = adapter_dir.parent / "training_summary.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        script = summary.get("script_args", {})
        facts.update(train_file=script.get("train_file"), train_rows=summary.get("train_rows"),
                     val_rows=summary.get("val_rows"), best_eval_accuracy=summary.get("best_eval_accuracy"),
                     epochs=summary.get("epochs"), system_prompt=script.get("system_prompt"),
                     user_template=script.get("user_template"))
    state_file = adapter_dir / "trainer_state.json"
    if state_file.is_file():
        state = json.loads(state_file.read_text())
        at_step = [e["eval_accuracy"] for e in state.get("log_history", []) if "eval_accuracy" in e]
        facts.update(checkpoint_step=state.get("global_step"),
                     checkpoint_eval_accuracy=at_step[-1] if at_step else None)
    facts.setdefault("system_prompt", DEFAULT_SYSTEM_PROMPT)
    facts.setdefault("user_template", DEFAULT_USER_TEMPLATE)
    return facts


def describe_dtype(dtype: str, base_dtype: str | None) -> str:
    """The model card's line on the merged weights: their dtype and whether it is the base's own."""
    if base_dtype is None:
        return f"- weights: {dtype} (the base's config.json records no dtype)"
    if dtype == base_dtype:
        return f"- weights: {dtype} (the base model's own dtype)"
    return f"- weights: {dtype} (asked for with --dtype; the base is {base_dtype})"


def model_card(kind: str, base: str, facts: dict, load_hint: str, weights: str | None = None) -> str:
    """README.md for an exported model or adapter; ``weights`` is a line on the exported weights' dtype."""
    lora = facts["lora"]
    accuracy = facts.get("checkpoint_eval_accuracy") or facts.get("best_eval_accuracy")
    lines = ["---", f"base_model: {base}", f"library_name: {'peft' if kind == 'adapter' else 'transformers'}",
             "tags: [qwen2, lora, multiple-choice, mcq-tune]", "---", "",
             f"# Single-choice (A-D) answerer: {kind} export", "",
             f"Fine-tuned from `{base}` with LoRA by mcq-tune (Unsloth 4-bit QLoRA + TRL SFTTrainer, loss on the "
             "answer letter only).", "", "## Training", "",
             f"- LoRA: r={lora.get('r')}, alpha={lora.get('lora_alpha')}, dropout={lora.get('lora_dropout')}, "
             f"modules: {', '.join(sorted(lora.get('target_modules') or []))}"]
    if weights:
        lines.append(weights)
    if facts.get("train_file"):
        lines.append(f"- data: `{facts['train_file']}` ({facts.get('train_rows')} training rows, "
                     f"{facts.get('val_rows')} validation rows, {facts.get('epochs')} epochs)")
    if facts.get("checkpoint_step") is not None:
        lines.append(f"- checkpoint at step {facts['checkpoint_step']}")
    lines.append(f"- validation accuracy: {accuracy:.2%}" if accuracy is not None else
                 "- validation accuracy: not recorded (no training_summary.json beside the adapter)")
    lines += ["", "## Prompt format", "",
              "Qwen's chat template; the answer is the first token the assistant writes (one letter).", "",
              "System prompt:", "", "```text", facts["system_prompt"] or "(none)", "```", "", "User message:", "",
              "```text", facts["user_template"], "```", "", "## Load it", "", load_hint, ""]
    return "\n".join(lines)


def load_hint_merged(out_dir: Path) -> str:
    return "\n".join([
        "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f"model = AutoModelForCausalLM.from_pretrained('{out_dir}', dtype='auto', device_map='auto')",
        f"tokenizer = AutoTokenizer.from_pretrained('{out_dir}')", "```", "",
        f"or answer a test file: `python infer.py --model_path {out_dir} --test_file test.csv`"])


def load_hint_adapter(out_dir: Path, base: str) -> str:
    return "\n".join([
        "```python", "from peft import AutoPeftModelForCausalLM",
        f"model = AutoPeftModelForCausalLM.from_pretrained('{out_dir}')  # loads {base} + this adapter", "```",
        "", f"or: `python infer.py --model_path {out_dir} --test_file test.csv`"])
