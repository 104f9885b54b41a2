"""Merge a trained adapter into its original 16-bit base (not the 4-bit copy training used), on the CPU.

    python export.py --adapter_path outputs/qwen2.5-14b-lora/adapter --format merged --output_dir exports/merged

The merge keeps the base's own dtype (``dtype`` / ``torch_dtype`` in its config.json) unless ``--dtype`` names
another, so the merged model answers as base + adapter does. The output is sharded safetensors with an index,
the tokenizer and its chat template, greedy generation_config.json, a model card and the adapter's training record
(its prompt settings, which infer.py adopts). ``check_adapter`` is the check every export makes first: an adapter
folder whose weights file is whole.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mcqtune.files import write_atomic
from mcqtune.errors import UserError
from mcqtune.model.model_card import describe_dtype, load_hint_merged, model_card, training_facts
from mcqtune.model.loading import check_model_source, check_safetensors, resolve_adapter_base, verify_safetensors

logger = logging.getLogger("export")

DTYPES = ("bfloat16", "float16", "float32")
FALLBACK_DTYPE = "float32"  # what transformers loads when config.json records no dtype
MAX_SHARD_SIZE = "4GB"  # the hub convention: shards of a few GB plus an index, streamed by every loader
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class ExportError(UserError):
    """An export that cannot be done as asked; the message says what to change."""


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


def resolve_base(adapter_dir: Path, base_model_id: str | None) -> str:
    """The base to merge into: --base_model_id, else the one the adapter records, found as infer.py finds it."""
    from mcqtune.runs.provenance import check_base_of_adapter

    base = base_model_id or resolve_adapter_base(adapter_dir)
    check_model_source(base)
    check_base_of_adapter(adapter_dir, base, consumer="export")
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


def tokenizer_source(adapter_dir: Path, base: str) -> str:
    return str(adapter_dir) if (adapter_dir / "tokenizer_config.json").is_file() else base


def write_generation_config(tokenizer, out_dir: Path) -> None:
    """Greedy decoding that stops at the end of the assistant turn, as the answers were trained."""
    from transformers import GenerationConfig

    stops = [tokenizer.convert_tokens_to_ids(t) for t in STOP_TOKENS if t in tokenizer.get_vocab()]
    GenerationConfig(do_sample=False, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
                     max_new_tokens=48).save_pretrained(str(out_dir))


def export_merged(adapter_path: str | Path, output_dir: str | Path, base_model_id: str | None = None,
                  dtype: str | None = None, max_shard_size: str = MAX_SHARD_SIZE,
                  trust_remote_code: bool = False) -> Path:
    """Merge the adapter into the original base weights (not a 4-bit copy) on the CPU; write sharded
    safetensors with an index, the tokenizer and its chat template, generation_config.json and a model card.
    ``dtype`` None (or "auto") keeps the base's own dtype, as its config.json records it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mcqtune.model.loading import load_tokenizer

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
    card = model_card("merged", base, training_facts(adapter_dir), load_hint_merged(out_dir),
                      describe_dtype(dtype, base_dtype))
    write_atomic(out_dir / "README.md", card)
    write_merged_record(adapter_dir, out_dir)
    logger.info("wrote %s", out_dir)
    return out_dir


def write_merged_record(adapter_dir: Path, out_dir: Path) -> None:
    """The adapter's training record (mcq_provenance.json: the prompt settings above all), beside the merged weights
    with where they came from: infer.py answers a merged model with the prompt it was trained on, as it does the
    adapter (infer/setup.py adopt_training_prompt)."""
    from mcqtune.files import write_json_atomic
    from mcqtune.runs.provenance import ADAPTER_RECORD, read_json

    record = read_json(adapter_dir / ADAPTER_RECORD)
    if record is not None:
        write_json_atomic({**record, "merged_from": str(adapter_dir.resolve())}, out_dir / ADAPTER_RECORD)
