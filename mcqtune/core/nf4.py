"""NF4 weights read by a fused kernel while decoding (``--generation_engine nf4``).

bitsandbytes multiplies a batch of new tokens by a 4-bit weight in two steps: it writes the whole weight out in
16 bits, then multiplies, so a decoding step writes and reads every weight in 16 bits whatever the batch, eight
times the bytes of the 4-bit weights themselves. ``nf4_matmul`` is one Triton kernel that reads the packed 4-bit
codes and their block scales, turns them into 16-bit values in registers and multiplies them there: nothing is
written out.

The weights stay as bitsandbytes stores them (``Params4bit``: two codes a byte, the first in the high half; one
absmax per 64 values, itself quantised to 8 bits per 256 blocks when ``compress_statistics`` is on, the QLoRA
default), so the cache keeps the room 4-bit weights leave, and a LoRA adapter stays unmerged beside them (peft's
layer calls its base layer, then adds its own product): the same model can be the policy GRPO trains.

``fused_nf4(model)`` installs the kernel on every 4-bit linear layer for calls with at most ``MAX_FUSED_ROWS``
tokens and no gradient (decoding steps); larger calls (prompts) and training keep bitsandbytes' path, which is
efficient there. The values are bitsandbytes' up to rounding: it rounds code x scale to the weight's dtype, the
kernel rounds the code to the inputs' dtype and multiplies each block's float32 sums by its scale (rounding every
value as bitsandbytes does was many times slower: bench/RESULTS.md, session 18).

Measured there too: the kernel beats bitsandbytes' path on small steps only (each tile of 16-32 rows looks the
codes up again, so its time grows with the batch), and the linear layers are a minor part of a decoding step at
the 14B shape; ``--generation_engine continuous`` stays the faster engine.
"""

from __future__ import annotations

import contextlib
import functools
import logging

import torch

from mcqtune.core.engines import interpreting
from mcqtune.errors import ConfigError

logger = logging.getLogger(__name__)

# tokens a call may hold to take the fused kernel (a decoding step's replies); more: bitsandbytes. Not lowered to
# where the kernel stops winning (bench/RESULTS.md): the engine's figure is then the kernel's own, not a mix
MAX_FUSED_ROWS = 256
BLOCK_K = 64  # weight values along the input per step of the kernel's loop: one block, one scale
MIN_PROGRAMS_PER_SM = 4  # the input dimension is split until the grid has this many programs per multiprocessor


def nf4_problem(option: str = "generation_engine", fallback: str = "generate") -> str | None:
    """Why this machine cannot run the fused NF4 kernel, or None; ``option`` names the command's option for it
    (infer's --generation_engine, GRPO's --rollout_engine) and ``fallback`` the value to use instead."""
    if not torch.cuda.is_available():
        return (f"{option} nf4 needs a CUDA GPU (its kernel is Triton's); this machine has none: use "
                f"--{option} {fallback}")
    try:
        import triton  # noqa: F401
    except ImportError:
        return f"{option} nf4 needs Triton (pip install triton), or use --{option} {fallback}"
    return None


@functools.cache
def _kernel(interpret: bool):
    """The Triton kernel, defined at first use (and under Triton's interpreter when TRITON_INTERPRET=1 was set
    before Triton was first imported: tests/core/interpreted_nf4.py)."""
    import triton
    import triton.language as tl

    @triton.jit(do_not_specialize=["M", "offset", "stride_os"])  # one compiled kernel for any number of replies
    def nf4_matmul_kernel(x_ptr, w_ptr, absmax_ptr, absmax2_ptr, code2_ptr, code_ptr, out_ptr, offset,
                          M, N, K, stride_xm, stride_om, stride_os, k_per_split,
                          NESTED: tl.constexpr, BLOCKSIZE: tl.constexpr, BLOCKSIZE2: tl.constexpr,
                          PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          GROUPS: tl.constexpr):
        # the row tiles of one weight tile are neighbours in the grid: they run together and share it through L2
        pid_m, pid_n, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        half = tl.arange(0, BLOCKSIZE // 2)  # byte j of a block holds values 2j (high half) and 2j + 1 (low half)
        values = tl.arange(0, BLOCKSIZE)
        row_ok, col_ok = rows < M, cols < N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        k_start = pid_s * k_per_split
        for k0 in range(k_start, k_start + k_per_split, BLOCKSIZE * GROUPS):
            for group in tl.static_range(GROUPS):  # independent blocks: their loads are in flight together
                kb = k0 + group * BLOCKSIZE
                byte = tl.load(w_ptr + cols[:, None] * (K // 2) + kb // 2 + half[None, :], mask=col_ok[:, None],
                               other=0).to(tl.int32)  # (BLOCK_N, 32): the block's bytes of each output column
                block = cols * (K // BLOCKSIZE) + kb // BLOCKSIZE
                if NESTED:  # the absmax of each 64 values, stored as an 8-bit code of a 256-block scale
                    scale = tl.load(code2_ptr + tl.load(absmax_ptr + block, mask=col_ok, other=0).to(tl.int32))
                    scale = scale * tl.load(absmax2_ptr + block // BLOCKSIZE2, mask=col_ok, other=0) + offset
                else:
                    scale = tl.load(absmax_ptr + block, mask=col_ok, other=0).to(tl.float32)
                x = tl.load(x_ptr + rows[:, None] * stride_xm + kb + values[None, :], mask=row_ok[:, None], other=0)
                # the codes in the inputs' dtype, value 2j then 2j + 1; the block's scale multiplies its sums
                weight = tl.interleave(tl.load(code_ptr + (byte >> 4)), tl.load(code_ptr + (byte & 15)))
                acc += tl.dot(x, tl.trans(weight), input_precision=PRECISION) * scale[None, :]
        out = out_ptr + pid_s * stride_os + rows[:, None] * stride_om + cols[None, :]
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])

    return nf4_matmul_kernel


def tile_sizes(m: int, n: int, k: int, processors: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, splits of the input dimension, GROUPS: blocks of 64 values a loop step) for an (m, k) x
    (k, n) product: tiles of 16 or 32 rows (the tensor cores' least is 16), and the input split until the grid
    holds MIN_PROGRAMS_PER_SM programs per multiprocessor (a decoding step's k/v projections have few output
    columns)."""
    block_m = 16 if m <= 16 else 32
    block_n = 64
    groups = 1
    programs = -(-n // block_n) * -(-m // block_m)
    splits = 1
    while programs * splits < MIN_PROGRAMS_PER_SM * processors and k % (BLOCK_K * groups * splits * 2) == 0:
        splits *= 2
    return block_m, block_n, splits, groups


@functools.cache
def _processors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


@functools.cache
def _codes(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The 16 NF4 values in the inputs' dtype, as the kernel reads them."""
    import bitsandbytes.functional as bnb_functional

    return bnb_functional.get_4bit_type("nf4", device="cpu").to(dtype).to(device)


def nf4_matmul(x: torch.Tensor, weight: torch.Tensor, state, offset: float | None = None,
               tiles: tuple[int, int, int, int] | None = None, num_warps: int = 4, num_stages: int = 2
               ) -> torch.Tensor:
    """``x @ W.T`` where W (``state.shape`` (n, k)) is bitsandbytes' packed NF4 ``weight`` with its ``state``
    (``QuantState``); x is (m, k) in the compute dtype; the result is (m, n) in x's dtype. Float32 inputs are
    multiplied in full float32 (no TF32), as torch's matmul does by default. ``offset``: the nested absmax's
    offset as a number (read from the GPU when not given, which a step captured as a CUDA graph cannot do).
    ``tiles`` (block_m, block_n, splits, groups), ``num_warps`` and ``num_stages`` override the defaults
    (bench/nf4_check.py compares them)."""
    n, k = state.shape
    if getattr(state, "packing_format_for_cpu", False):
        raise ConfigError("the nf4 engine: these NF4 weights were repacked for bitsandbytes' CPU kernels; the fused "
                          "kernel reads the GPU layout (run on a CUDA GPU)")
    if state.quant_type != "nf4" or k % BLOCK_K or state.blocksize != BLOCK_K:
        raise ConfigError(f"the nf4 engine reads NF4 weights in blocks of {BLOCK_K} with an input size divisible by "
                          f"{BLOCK_K}; got {state.quant_type}, blocks of {state.blocksize}, input size {k}: use the "
                          "engine without the fused kernel")
    if weight.dtype != torch.uint8:  # bnb_4bit_quant_storage: the same packed bytes held in a wider dtype
        weight = weight.view(torch.uint8)
    x = x.contiguous()
    m = x.shape[0]
    block_m, block_n, splits, groups = tiles or tile_sizes(m, n, k, _processors(x.device))
    if k % (splits * groups * BLOCK_K) or min(block_m, block_n) < 16:
        raise ValueError(f"tiles {block_m} x {block_n} with {splits} splits of {groups} blocks a step do not divide "
                         f"an input of {k} values into whole blocks of {BLOCK_K} (tiles need 16 rows and columns "
                         "or more)")
    if splits == 1:
        out = partial = torch.empty((m, n), device=x.device, dtype=x.dtype)
    else:
        partial = torch.empty((splits, m, n), device=x.device, dtype=torch.float32)
    nested = bool(state.nested)
    absmax = state.absmax
    absmax2 = state.state2.absmax if nested else absmax
    code2 = state.state2.code if nested else absmax
    offset = (float(state.offset) if offset is None else offset) if nested else 0.0
    grid = (-(-m // block_m), -(-n // block_n), splits)
    _kernel(interpreting())[grid](
        x, weight, absmax, absmax2, code2, _codes(x.device, x.dtype), partial, offset, m, n, k, x.stride(0),
        partial.stride(-2), partial.stride(0) if splits > 1 else 0, k // splits, NESTED=nested, BLOCKSIZE=BLOCK_K,
        BLOCKSIZE2=state.state2.blocksize if nested else 1,
        PRECISION="ieee" if x.dtype == torch.float32 else "tf32", BLOCK_M=block_m, BLOCK_N=block_n, GROUPS=groups,
        num_warps=num_warps, num_stages=num_stages)
    return out if splits == 1 else partial.sum(0).to(x.dtype)


def fused_forward(layer, original, x: torch.Tensor, offset: float | None = None, calls: dict | None = None
                  ) -> torch.Tensor:
    """A bitsandbytes ``Linear4bit``'s forward: the fused kernel for a decoding step, its own path otherwise
    (``calls`` counts each)."""
    rows = x.numel() // x.shape[-1]
    state = getattr(layer.weight, "quant_state", None)
    fused = rows <= MAX_FUSED_ROWS and state is not None and not torch.is_grad_enabled()
    if calls is not None:
        calls["fused" if fused else "bitsandbytes"] += 1
    if not fused:
        return original(x)
    compute = layer.compute_dtype or x.dtype  # as bitsandbytes: inputs in the compute dtype, the result in x's
    out = nf4_matmul(x.reshape(rows, x.shape[-1]).to(compute), layer.weight, state, offset)
    if layer.bias is not None:
        out = out + layer.bias.to(out.dtype)
    return out.reshape(*x.shape[:-1], out.shape[-1]).to(x.dtype)


def nf4_layers(model) -> list:
    """The model's bitsandbytes 4-bit linear layers holding NF4 weights (peft's LoRA layers call them)."""
    import bitsandbytes as bnb

    return [module for module in model.modules() if isinstance(module, bnb.nn.Linear4bit)
            and getattr(getattr(module.weight, "quant_state", None), "quant_type", None) == "nf4"]


@contextlib.contextmanager
def fused_nf4(model, option: str = "generation_engine"):
    """Within: every NF4 linear layer of ``model`` decodes through ``nf4_matmul``; yields the count of calls by
    path ({"fused": n, "bitsandbytes": m}, as Python saw them: a step replayed as a CUDA graph counts where it was
    captured). Refused (ConfigError, naming ``option``) when the model has no NF4 layer, or when nothing within
    called one (a backend that computes its layers itself, as Unsloth's inference does): the engine never runs as
    something else under its name."""
    layers = nf4_layers(model)
    if not layers:
        raise ConfigError(f"{option} nf4 needs a model loaded in 4-bit NF4 (--load_in_4bit true, the default)")
    # nothing is compiled ahead: continuous batching runs each step once uncaptured before capturing it as a CUDA
    # graph (transformers' ModelRunner._capture_graph), and that run compiles the step's kernel variant
    calls = {"fused": 0, "bitsandbytes": 0}
    own = {id(layer): layer.__dict__.get("forward") for layer in layers}  # a hook's forward (accelerate), if any
    for layer in layers:
        state = layer.weight.quant_state
        offset = float(state.offset) if state.nested else None  # read once here, not inside a captured step
        layer.forward = functools.partial(fused_forward, layer, layer.forward, offset=offset, calls=calls)
    logger.info("generation_engine nf4: %d NF4 linear layers decode through the fused kernel", len(layers))
    try:
        yield calls
    finally:
        for layer in layers:
            if own[id(layer)] is None:
                del layer.forward  # the class's forward again
            else:
                layer.forward = own[id(layer)]
    if not calls["fused"] and calls["bitsandbytes"]:
        raise ConfigError(f"{option} nf4: its kernel was never called: all {calls['bitsandbytes']} calls took "
                          f"bitsandbytes' path (gradients on, or more than {MAX_FUSED_ROWS} tokens a call)")
    if not calls["fused"]:
        raise ConfigError(f"{option} nf4: its kernel was never called: the model computes its 4-bit layers "
                          "without their forward (the unsloth backend's generation does); use --backend hf")
    logger.debug("nf4 kernel calls: %s", calls)
