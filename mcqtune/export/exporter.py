r"""Export a trained adapter: merged 16-bit weights, GGUF for llama.cpp / Ollama, a clean adapter, an lm-eval task.

    python export.py --adapter_path outputs/qwen2.5-14b-lora/checkpoint-300 --format merged \
        --output_dir exports/merged
    python export.py --adapter_path outputs/qwen2.5-14b-lora/adapter --format gguf --gguf_type q4_k_m \
        --output_dir exports/gguf
    ollama create mcq-qwen -f exports/gguf/Modelfile          # then: ollama run mcq-qwen
    python export.py --adapter_path outputs/qwen2.5-14b-lora/adapter --format adapter \
        --output_dir exports/adapter
    python export.py --lm_eval_task test.csv --adapter_path outputs/qwen2.5-14b-lora/adapter \
        --output_dir exports/lm_eval  # the adapter's training prompt; without --adapter_path, the default one
    # then lm_eval ... --include_path exports/lm_eval
    python export.py --format 4bit --model /models/Qwen2.5-14B-Instruct-1M \
        --output_dir /models/qwen14b-nf4  # faster starts

`--adapter_path` is any adapter this project wrote: the final `adapter/` or a `checkpoint-*` folder. The base
model is the one recorded in adapter_config.json unless `--base_model_id` names another copy of it (a local
directory of the original 16-bit weights). The merge runs on the CPU, no GPU, in the base's own dtype unless
`--dtype` names another: 2 bytes per parameter of RAM for a 16-bit base, 4 for float32. Every format gets a
model card (README.md).

Every weights file is checked before it is used and after it is copied: a damaged or cut-short
adapter_model.safetensors stops the export with one line saying so. Options that the chosen format does not
use are refused rather than ignored (`--lm_eval_task` exports no model, so it takes no `--format`).

One module per format: `merged.py`, `gguf.py` (llama.cpp's converter and quantiser, from
`requirements-export.txt`), `lm_eval_task.py`; `model_card.py` writes the cards. This file is the command line,
the clean adapter copy and the 4-bit base.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from mcqtune.files import write_atomic
from mcqtune.runs.provenance import ADAPTER_RECORD
from mcqtune.errors import DataError
from mcqtune.export.gguf import DEFAULT_GGUF_TYPE, GGUF_CONVERTER_TYPES, GGUF_KQUANTS, export_gguf
from mcqtune.export.lm_eval_task import write_lm_eval_task
from mcqtune.model.merged import (ADAPTER_WEIGHTS, DTYPES, MAX_SHARD_SIZE, ExportError, check_adapter, export_merged,
                           resolve_base)
from mcqtune.model.model_card import load_hint_adapter, model_card, training_facts
from mcqtune.model.loading import check_model_source, verify_safetensors

logger = logging.getLogger("export")

FORMATS = ("merged", "gguf", "adapter", "4bit")
DEFAULT_FORMAT = "merged"
ADAPTER_FILES = ("adapter_config.json", ADAPTER_WEIGHTS)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "added_tokens.json", "chat_template.jinja")


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
    for name in ADAPTER_FILES + TOKENIZER_FILES + (ADAPTER_RECORD,):  # the record: how it was trained
        if (adapter_dir / name).is_file():
            copy_verified(adapter_dir / name, out_dir / name)
    if not (out_dir / "tokenizer_config.json").is_file():
        from mcqtune.model.loading import load_tokenizer

        load_tokenizer(base).save_pretrained(str(out_dir))
    write_atomic(out_dir / "README.md", model_card("adapter", base, training_facts(adapter_dir),
                                                  load_hint_adapter(out_dir, base)))
    logger.info("wrote %s", out_dir)
    return out_dir


def export_4bit(base: str, output_dir: str | Path, max_shard_size: str = MAX_SHARD_SIZE,
                trust_remote_code: bool = False) -> Path:
    """The base model quantised to NF4 once and saved (bitsandbytes' own format, safetensors): infer.py then
    reads the 4-bit weights instead of reading and quantising the 16-bit ones at every start (the start-up and
    host memory it saves: bench/RESULTS.md). Needs a CUDA GPU. Use it as the base:
    ``infer.py --model_path ADAPTER --base_model_id OUT``."""
    import torch

    from mcqtune.model.loading import load_base_model

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


# ------------------------------------------------------------------------------------------ CLI


# Which options each job reads; any other one given is refused, not ignored. --output_dir is always needed.
JOB_OPTIONS = {
    "merged": ("adapter_path", "base_model_id", "dtype", "max_shard_size", "trust_remote_code"),
    "gguf": ("adapter_path", "base_model_id", "gguf_type", "trust_remote_code"),
    "adapter": ("adapter_path", "base_model_id"),
    "4bit": ("model", "max_shard_size", "trust_remote_code"),
    "lm_eval": ("lm_eval_task", "adapter_path"),
}
JOB_SPECIFIC_OPTIONS = ("adapter_path", "model", "base_model_id", "dtype", "max_shard_size", "gguf_type",
                        "lm_eval_task", "trust_remote_code")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter_path", help="adapter/ or checkpoint-* folder written by train_sft.py (with "
                                               "--lm_eval_task: the task takes the prompt it was trained with; a "
                                               "merged export's folder serves too)")
    parser.add_argument("--model", help="--format 4bit: the 16-bit base model to quantise once and save")
    parser.add_argument("--format", choices=FORMATS, help=f"what to export from --adapter_path (default "
                                                           f"{DEFAULT_FORMAT}; not with --lm_eval_task)")
    parser.add_argument("--output_dir", required=True, help="a new (or empty) folder for the export: exports never "
                                                           "overwrite")
    parser.add_argument("--base_model_id", help="the original 16-bit base (default: from adapter_config.json)")
    parser.add_argument("--dtype", choices=DTYPES, help="--format merged: the weights' dtype (default: the base "
                                                        "model's own, from its config.json)")
    parser.add_argument("--max_shard_size", help=f"--format merged / 4bit: largest weights file (default "
                                                 f"{MAX_SHARD_SIZE})")
    parser.add_argument("--gguf_type", choices=GGUF_CONVERTER_TYPES + tuple(GGUF_KQUANTS),
                        help=f"--format gguf: the GGUF file type (default {DEFAULT_GGUF_TYPE})")
    parser.add_argument("--lm_eval_task", metavar="CSV", help="write an lm-eval task for this labelled CSV (no "
                                                              "model is exported: takes no --format)")
    parser.add_argument("--trust_remote_code", action="store_true",
                        help="run code shipped with the model (config.json auto_map); off unless you trust its "
                             "source")
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
            write_lm_eval_task(args.lm_eval_task, args.output_dir, **trained_prompt(args.adapter_path))
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


def trained_prompt(adapter_path: str | None) -> dict:
    """The system prompt and question template an adapter (or a merged export of one) was trained with, from its
    training record; none given: the defaults. Its chat template travels with the model's tokenizer (the adapter's,
    which a merged export keeps)."""
    from mcqtune.runs.provenance import ADAPTER_RECORD, adapter_prompt

    if not adapter_path:
        return {}
    if not Path(adapter_path).is_dir():
        raise ExportError(f"--adapter_path {adapter_path}: no such folder")
    prompt = adapter_prompt(adapter_path)
    if prompt is None:
        raise ExportError(f"{adapter_path} holds no {ADAPTER_RECORD} (training writes it), so the prompt it was "
                          "trained with is unknown; leave --adapter_path out to write the task with the default "
                          "prompt")
    if prompt.get("reasoning"):
        raise ExportError(f"{adapter_path} was trained to reason before its letter; an lm-eval multiple-choice "
                          "task scores the letter at once (use infer.py --mode reason)")
    if prompt.get("enable_thinking"):  # lm-eval renders the template without the switch
        raise ExportError(f"{adapter_path} was trained with the template's thinking switch on, which an lm-eval task "
                          "cannot pass to the template; score it with infer.py")
    return {name: prompt[name] for name in ("system_prompt", "user_template") if name in prompt}


def refuse_used_output_dir(output_dir: str | Path) -> None:
    """An export never writes into a folder that holds anything: not an earlier export, not a training run, not
    the adapter it reads."""
    folder = Path(output_dir)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ExportError(f"--output_dir {folder} is not an empty folder (an earlier export, a run folder or the "
                          "adapter itself?); give a new folder, or move that one away first: exports never overwrite")
