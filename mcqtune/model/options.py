"""The model options, each declared once: how the base weights are loaded (train_sft.py and infer.py inherit
these), which LoRA adapters are trained, and the bitsandbytes quantisation the loading options ask for."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# Nothing heavy at import time: both scripts import this before the backend is chosen, and Unsloth must be
# imported before transformers.

BACKENDS = ("auto", "unsloth", "hf")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class WeightOptions:
    """How the base model's weights are loaded, for training and for answering."""

    backend: str = field(default="auto", metadata={"help": "auto | unsloth | hf", "choices": list(BACKENDS)})
    load_in_4bit: bool = field(default=True, metadata={"help": "NF4 quantised base weights (QLoRA when training)"})


@dataclass
class InferenceWeightOptions(WeightOptions):
    """The loading options only infer.py has. Training reads trust_remote_code from TRL's SFTConfig instead, and
    loads safetensors weights in 4-bit or 16-bit only."""

    load_in_8bit: bool = field(default=False, metadata={"help": "8-bit weights instead of 4-bit (twice the memory)"})
    offload: bool = field(default=False, metadata={"help": "spread the weights over GPU and CPU memory (slow)"})
    fallback_ladder: bool = field(default=False, metadata={"help": "if loading fails, try 8-bit, then 16-bit with "
                                                                   "CPU offload (recorded in report.json)"})
    allow_pickle: bool = field(default=False, metadata={"help": "load pickle weights (.bin, .pt, .pth, .ckpt); "
                                                                "they can run code"})
    trust_remote_code: bool = field(default=False, metadata={"help": "run code shipped with the model"})

    @classmethod
    def of(cls, options: InferenceWeightOptions, **changes) -> InferenceWeightOptions:
        """Just the loading options of ``options`` (an argument class that inherits them), ``changes`` applied."""
        values = {f.name: getattr(options, f.name) for f in dataclasses.fields(cls)}
        return cls(**{**values, **changes})


@dataclass
class LoraOptions:
    """The LoRA adapters train_sft.py trains."""

    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "0 enables Unsloth's fused LoRA kernels"})
    lora_target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS),
                                           metadata={"help": "modules that get adapters"})


def check_lora_options(options: LoraOptions) -> list[str]:
    """The problems with the LoRA options, one sentence each (none: an empty list)."""
    problems = []
    if options.lora_r < 1 or options.lora_alpha < 1:
        problems.append("lora_r and lora_alpha must be positive")
    if not 0 <= options.lora_dropout < 1:
        problems.append(f"lora_dropout must be in [0, 1), got {options.lora_dropout}")
    return problems


def quantization_config(load_in_4bit: bool, load_in_8bit: bool, compute_dtype):
    """The bitsandbytes config the hf backend loads with: NF4 with double quantisation (QLoRA's) computing in
    ``compute_dtype``, else 8-bit, else None (unquantised). The unsloth backend is given the two switches instead."""
    from transformers import BitsAndBytesConfig

    if load_in_4bit:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype)
    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return None
