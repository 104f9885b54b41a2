"""Model-FLOP utilisation: the FLOPs a model's real tokens need, over what the GPU could do in the same time.

FLOPs per token follow the usual dense-transformer count (Kaplan et al. 2020; PaLM appendix B): a forward pass
costs 2 x the attention and MLP weights, plus the score and value products of causal attention, 2 x layers x
(query width) x sequence length on average over a sequence. The output layer is left out: only the answer
position needs it (our loss and scores read it there alone), so computing it elsewhere is not model work.
Training LoRA on a frozen base costs a forward and a backward to the activations (no gradients for the frozen
weights), so 2 x forward; gradient checkpointing's recomputation is not counted either. Padding is excluded
by the callers, which count real tokens only.

Peak rates are the vendors' dense BF16 tensor-core figures (no sparsity), by device name.
"""

from __future__ import annotations

# (substring of torch.cuda.get_device_name(), dense BF16 FLOP/s, source)
PEAK_BF16 = (
    ("H200", 989.4e12, "NVIDIA H200 datasheet (SXM, dense BF16)"),
    ("H100", 989.4e12, "NVIDIA H100 datasheet (SXM, dense BF16)"),
    ("A100", 312e12, "NVIDIA A100 datasheet (dense BF16)"),
    ("RTX 4090", 165.2e12, "NVIDIA Ada Lovelace architecture whitepaper, RTX 4090 (dense BF16, FP32 accumulate)"),
    ("L40S", 362.05e12, "NVIDIA L40S datasheet (dense BF16)"),
    ("RTX 4080", 97.5e12, "NVIDIA Ada Lovelace architecture whitepaper, RTX 4080 (dense BF16, FP32 accumulate)"),
)
RTX_4090_BF16 = 165.2e12  # the README's projection target


def peak_flops(device_name: str | None = None) -> tuple[float | None, str]:
    """The device's dense BF16 peak and where the figure comes from; (None, reason) for an unknown device."""
    if device_name is None:
        import torch

        if not torch.cuda.is_available():
            return None, "no GPU"
        device_name = torch.cuda.get_device_name()
    for key, flops, source in PEAK_BF16:
        if key in device_name:
            return flops, source
    return None, f"no peak rate on record for {device_name}"


def block_parameters(config) -> int:
    """Weights of the attention and MLP blocks (the input embedding is a lookup)."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)  # q and o, k and v
    mlp = 3 * hidden * config.intermediate_size  # gate, up, down
    return layers * (attention + mlp)


def flops_per_token(config, training: bool, sequence: int = 256) -> float:
    """FLOPs per real token in sequences of ``sequence`` tokens."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    forward = 2 * block_parameters(config) + 2 * config.num_hidden_layers * heads * head_dim * sequence
    return float(2 * forward if training else forward)


def utilisation(tokens_per_second: float | None, config, training: bool, device_name: str | None = None,
                **kwargs) -> dict:
    """``{"mfu": ..., "peak_flops": ..., "peak_flops_source": ...}``; mfu is None where the peak is unknown."""
    peak, source = peak_flops(device_name)
    flops = flops_per_token(config, training, **kwargs)
    mfu = round(tokens_per_second * flops / peak, 4) if peak and tokens_per_second else None
    return {"mfu": mfu, "flops_per_token": flops, "peak_flops": peak, "peak_flops_source": source}
