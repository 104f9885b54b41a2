"""Weights made for decoding (``--generation_engine fp8``): the adapter merged once, every linear layer of the
decoder held in 8-bit floats.

A decoding step reads every weight once for a handful of new tokens, so its cost is the weights' bytes. With 4-bit
NF4 weights (bitsandbytes) a batch of new tokens is worse than that: each step first writes every weight out in 16
bits, then multiplies. Here each linear layer becomes ``Fp8Linear``: its weight (the 16-bit weight the model
computes with -- for an NF4 base, the dequantised NF4 values -- plus the merged LoRA update) in e4m3 with one scale
per output row; at each call the inputs are scaled per row and the product runs on FP8 tensor cores
(``torch._scaled_mm``, compute capability 8.9 and up: the RTX 4090, H100, H200). The embeddings and the output
layer stay 16-bit: the letters' probabilities are read there.

The format changes the arithmetic, so replies can differ from the 16-bit path's: bench/RESULTS.md reports the
letter agreement measured on the tiny model and at the 14B shape.
"""

from __future__ import annotations

import gc
import logging

import torch

from mcqtune.errors import ConfigError

logger = logging.getLogger(__name__)

FP8_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada (RTX 4090) and Hopper (H100, H200)
MIN_SCALE = 1e-12  # keeps an all-zero row's scale above zero (its values stay zero)


def fp8_problem() -> str | None:
    """Why this machine cannot run FP8 weights, or None."""
    if not torch.cuda.is_available():
        return "generation_engine fp8 needs a CUDA GPU with FP8 tensor cores (RTX 4090, H100, H200); this machine " \
               "has none: use --generation_engine generate"
    capability = torch.cuda.get_device_capability()
    if capability < FP8_CAPABILITY:
        name = torch.cuda.get_device_name()
        return (f"generation_engine fp8 needs FP8 tensor cores (compute capability 8.9+: RTX 4090, H100, H200); "
                f"{name} has {capability[0]}.{capability[1]}: use --generation_engine continuous or generate")
    return None


def quantize_rows(weight):
    """(e4m3 weight, float32 scale per row): ``weight ~= fp8.float() * scale[:, None]``."""
    weight = weight.float()
    scale = (weight.abs().amax(dim=1) / torch.finfo(torch.float8_e4m3fn).max).clamp(min=MIN_SCALE)
    return (weight / scale[:, None]).to(torch.float8_e4m3fn), scale


class Fp8Linear(torch.nn.Module):
    """y = x W^T + b with W in e4m3 (one scale per output row) and x scaled per row to e4m3 at each call."""

    def __init__(self, weight, scale, bias=None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale.reshape(1, -1))
        self.register_buffer("bias", bias)

    @classmethod
    def from_weight(cls, weight, bias=None) -> "Fp8Linear":
        quantized, scale = quantize_rows(weight)
        return cls(quantized, scale, None if bias is None else bias.detach().clone())

    def forward(self, x):
        rows = x.reshape(-1, self.in_features)
        x_scale = (rows.abs().amax(dim=1, keepdim=True).float() / torch.finfo(torch.float8_e4m3fn).max) \
            .clamp(min=MIN_SCALE)
        quantized = (rows.float() / x_scale).to(torch.float8_e4m3fn)
        out = torch._scaled_mm(quantized, self.weight.t(), scale_a=x_scale, scale_b=self.scale, out_dtype=x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, fp8"


def dense_weight(layer):
    """The 16-bit weight a linear layer computes with (an NF4 layer's dequantised values), as float32."""
    weight = layer.weight
    state = getattr(weight, "quant_state", None)
    if state is not None:  # bitsandbytes 4-bit
        import bitsandbytes.functional as bnb_functional

        return bnb_functional.dequantize_4bit(weight.data, state).float()
    if getattr(weight, "dtype", None) is not None and weight.dtype.is_floating_point:
        return weight.detach().float()
    raise ConfigError(f"generation_engine fp8 cannot read {type(layer).__name__} weights of dtype {weight.dtype}; "
                      "load the model in 4-bit or 16-bit (leave out --load_in_8bit)")


def merged_weight(layer):
    """(weight with every active LoRA adapter merged, bias) of a linear layer or a peft LoRA layer around one."""
    base = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
    weight = dense_weight(base)
    for name in getattr(layer, "active_adapters", ()) if base is not layer else ():
        if name not in getattr(layer, "lora_A", {}):
            continue
        if getattr(layer, "use_dora", {}).get(name):
            raise ConfigError(f"generation_engine fp8 does not merge DoRA adapters ({name}); use "
                              "--generation_engine continuous or generate")
        weight += layer.get_delta_weight(name).float().to(weight.device)
    return weight, base.bias


def is_linear(module) -> bool:
    """A decoder linear layer to convert: torch's, bitsandbytes' 4-bit one, or a peft LoRA layer around either."""
    base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
    return isinstance(base, torch.nn.Linear) and not isinstance(module, Fp8Linear)


COLLECT_EVERY = 8  # replaced layers between two runs of the cycle collector (a few MB each at 14B; a run is ~0.1 s)


def to_fp8(model):
    """The model with every linear layer of its decoder (all but the output layer) merged and held in FP8, in place,
    one layer at a time: only names are listed up front, so each replaced layer (its NF4 weight, its adapter) is
    freed before the next is converted, and the peak stays near the larger of the two formats. A peft model comes
    back unwrapped (its adapters are in the weights). Returns (model, number of layers converted)."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    head = model.get_output_embeddings()
    names = outermost([name for name, module in model.named_modules() if module is not head and is_linear(module)])
    with torch.no_grad():
        for done, name in enumerate(names, 1):
            weight, bias = merged_weight(model.get_submodule(name))
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, Fp8Linear.from_weight(weight, bias))
            del weight, bias
            if done % COLLECT_EVERY == 0 or done == len(names):
                # bitsandbytes' 4-bit weight points back at its layer (Params4bit.module): a replaced NF4 layer is
                # a reference cycle, freed only by the cycle collector. Without this, at 14B the NF4 copy (6 GiB)
                # stayed beside the FP8 one and the cache got what was left (measured on an H100, bench/RESULTS.md).
                gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the NF4 blocks freed above return to the cache's budget (batch_planning)
    logger.info("generation_engine fp8: %d linear layers merged and held in FP8", len(names))
    return model, len(names)


def outermost(names: list[str]) -> list[str]:
    """Each LoRA layer once: its inner base_layer (also a torch Linear) is converted with it, not again."""
    listed = set(names)
    return [name for name in names if not any(name.startswith(other + ".") for other in listed if other != name)]
