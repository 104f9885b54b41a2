"""Load models and tokenizers for training and inference; export adapters and merged weights.

Two backends share one interface:

* ``unsloth`` — ``FastLanguageModel`` (4-bit NF4, fused LoRA kernels, Unsloth gradient checkpointing, fast
  generation). On a machine without a GPU Unsloth falls back to the CPU, so tests run this same path.
* ``hf`` — plain transformers + bitsandbytes + peft: the reference recipe, kept as a fallback and as the
  benchmark baseline.

``import unsloth`` must come before trl/transformers/peft are imported, so ``select_backend`` runs first and
every heavy import happens inside the functions below.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "unsloth", "hf")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Privacy by default: no usage statistics, no hub traffic unless the user names a hub model.
os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


class ModelLoadError(RuntimeError):
    """A model, adapter or tokenizer could not be loaded; the message says what to check."""


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))


def unsloth_available() -> bool:
    return importlib.util.find_spec("unsloth") is not None


def select_backend(name: str = "auto") -> str:
    """Resolve 'auto' and import Unsloth first when it is chosen (it patches transformers/trl/peft)."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "auto":
        name = "unsloth" if unsloth_available() else "hf"
    if name == "unsloth":
        if not unsloth_available():
            raise ModelLoadError("backend 'unsloth' was asked for but Unsloth is not installed: "
                                 "pip install -r requirements.txt, or pass --backend hf")
        import unsloth  # noqa: F401  (must precede trl/transformers/peft)
    return name


def peek_backend(argv: Sequence[str] | None) -> str:
    """The backend named on the command line or in --config, read before trl/transformers are imported."""
    import argparse

    import yaml

    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--backend")
    peek.add_argument("--config")
    known, _ = peek.parse_known_args(argv)
    if known.backend:
        return known.backend
    if known.config and Path(known.config).is_file():
        return (yaml.safe_load(Path(known.config).read_text(encoding="utf-8")) or {}).get("backend", "auto")
    return "auto"


def compute_dtype():
    """bf16 where the GPU supports it, else fp16 on a GPU, fp32 on the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def is_local_dir(name_or_path: str | Path) -> bool:
    return Path(name_or_path).is_dir()


def check_model_source(name_or_path: str | Path) -> None:
    """A local directory must hold a model or an adapter; anything else must look like a hub id."""
    text = str(name_or_path)
    if is_local_dir(text):
        if not (Path(text) / "config.json").is_file() and not (Path(text) / "adapter_config.json").is_file():
            raise ModelLoadError(f"{text} is a directory but holds no config.json or adapter_config.json: "
                                 "point at a model directory (or a LoRA adapter directory)")
        return
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", text) or text.startswith("."):
        raise ModelLoadError(f"model path {text} does not exist (and is not a hub id like 'Qwen/Qwen2.5-14B-Instruct-1M')")


def read_adapter_base(adapter_dir: str | Path) -> str | None:
    """The base model an adapter was trained on, as recorded in adapter_config.json."""
    config = Path(adapter_dir) / "adapter_config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text()).get("base_model_name_or_path")


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def load_tokenizer(name_or_path: str | Path, trust_remote_code: bool = False, chat_template: str | None = None):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    if chat_template:
        tokenizer.chat_template = Path(chat_template).read_text() if Path(chat_template).is_file() else chat_template
    if tokenizer.chat_template is None:
        raise ModelLoadError(f"the tokenizer of {name_or_path} has no chat template; set chat_template in the config")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _bnb_config(load_in_4bit: bool, load_in_8bit: bool, dtype):
    from transformers import BitsAndBytesConfig

    if load_in_4bit:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=dtype)
    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def load_base_model(name_or_path: str | Path, backend: str, *, load_in_4bit: bool = True, load_in_8bit: bool = False,
                    max_seq_length: int = 2048, trust_remote_code: bool = False, training: bool = True,
                    seed: int = 42, device_map: Any = None):
    """The base model (quantised as asked) and its tokenizer, on the chosen backend."""
    import torch

    check_model_source(name_or_path)
    dtype = compute_dtype()
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=str(name_or_path), max_seq_length=max_seq_length, dtype=dtype,
            load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit and not load_in_4bit,
            trust_remote_code=trust_remote_code, random_state=seed,
            use_gradient_checkpointing="unsloth" if training else False,
            **({"device_map": device_map} if device_map is not None else {}),
        )
        return model, tokenizer
    from transformers import AutoModelForCausalLM

    quantization = _bnb_config(load_in_4bit, load_in_8bit, dtype)
    if device_map is None:
        device_map = {"": 0} if torch.cuda.is_available() else None
    model = AutoModelForCausalLM.from_pretrained(
        str(name_or_path), dtype=dtype, quantization_config=quantization, device_map=device_map,
        trust_remote_code=trust_remote_code, use_safetensors=None,
    )
    return model, load_tokenizer(name_or_path, trust_remote_code)


def add_lora(model, backend: str, lora: LoraSettings, gradient_checkpointing: bool = True, seed: int = 42):
    """Wrap the base model with trainable LoRA adapters (Unsloth's fused path or plain peft)."""
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        return FastLanguageModel.get_peft_model(
            model, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules), bias="none",
            use_gradient_checkpointing="unsloth" if gradient_checkpointing else False, random_state=seed,
        )
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def attach_adapter(model, adapter_dir: str | Path, backend: str):
    """Load a trained LoRA adapter onto a base model for inference."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as err:
        raise ModelLoadError(f"the adapter in {adapter_dir} does not fit this base model ({err}). Was it trained "
                             f"on {read_adapter_base(adapter_dir)}? Pass that model as --base_model_id") from None


def save_adapter(model, tokenizer, out_dir: str | Path) -> Path:
    """adapter_config.json + adapter_model.safetensors + tokenizer files."""
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def export_merged(base_model: str | Path, adapter_dir: str | Path, out_dir: str | Path,
                  dtype: str = "bfloat16", trust_remote_code: bool = False) -> Path:
    """Merge the adapter into the original 16-bit base weights (not the 4-bit copy) and save safetensors.

    Runs on the CPU so it needs no GPU memory: about 2 bytes per parameter of RAM (30 GB for 14B).
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    check_model_source(base_model)
    base = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=getattr(torch, dtype), device_map=None,
                                                trust_remote_code=trust_remote_code, low_cpu_mem_usage=True)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    out_dir = Path(out_dir)
    merged.save_pretrained(str(out_dir), safe_serialization=True)
    load_tokenizer(adapter_dir if (Path(adapter_dir) / "tokenizer_config.json").is_file() else base_model,
                   trust_remote_code).save_pretrained(str(out_dir))
    return out_dir
