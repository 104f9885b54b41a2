"""core/nf4.py's kernel run by Triton's interpreter on the CPU. Triton reads TRITON_INTERPRET when it is first
imported, so these run in a process of their own: test_nf4.py starts pytest on this file with it set."""

import os

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run by test_nf4.py under TRITON_INTERPRET=1", allow_module_level=True)

import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.functional as bnb_functional  # noqa: E402

from mcqtune.core import nf4  # noqa: E402


def reference(x, packed, state):
    """bitsandbytes' own path: the weight dequantised in its dtype, then multiplied in float32."""
    return x.float() @ bnb_functional.dequantize_4bit(packed, state).to(x.dtype).float().T


@pytest.mark.parametrize("tiles", [None, (16, 16, 1, 1), (32, 32, 2, 1), (16, 64, 1, 2)])
@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("m, n, k", [(1, 96, 256), (5, 40, 128), (17, 64, 384), (70, 33, 256)])
def test_the_kernel_computes_bitsandbytes_dequantised_product(tiles, nested, dtype, m, n, k):
    torch.manual_seed(m * n + k)
    weight = torch.randn(n, k, dtype=dtype)
    packed, state = bnb_functional.quantize_4bit(weight, blocksize=64, quant_type="nf4", compress_statistics=nested)
    x = torch.randn(m, k, dtype=dtype)
    out = nf4.nf4_matmul(x, packed, state, tiles=tiles)
    assert out.shape == (m, n) and out.dtype == dtype
    expected = reference(x, packed, state)
    # the same products up to rounding: the kernel rounds each code to x's dtype and applies its block's scale to the
    # float32 sums, where bitsandbytes rounds code x scale; the float32 sum's order differs too
    torch.testing.assert_close(out.float(), expected.to(dtype).float(), rtol=2e-3, atol=1e-4 if dtype ==
                               torch.float32 else 3e-2)


def test_the_input_dimension_split_across_programs_sums_to_the_same_product(monkeypatch):
    torch.manual_seed(1)
    weight = torch.randn(24, 512)
    packed, state = bnb_functional.quantize_4bit(weight, blocksize=64, quant_type="nf4")
    x = torch.randn(3, 512)
    whole = nf4.nf4_matmul(x, packed, state)
    monkeypatch.setattr(nf4, "MIN_PROGRAMS_PER_SM", 4)  # one multiprocessor here: a grid of 1 program -> 4 splits
    assert nf4.tile_sizes(3, 24, 512, 1) == (16, 64, 4, 1)
    split = nf4.nf4_matmul(x, packed, state)
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(split, reference(x, packed, state), rtol=1e-5, atol=1e-4)


def quantised(model):
    """``model`` with every decoder linear layer a bitsandbytes NF4 layer in the GPU's layout (float32 compute)."""
    names = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
             and module is not model.get_output_embeddings()]
    for name in names:
        linear = model.get_submodule(name)
        layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                  compute_dtype=torch.float32, quant_type="nf4", compress_statistics=True)
        layer.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, quant_type="nf4",
                                         compress_statistics=True)._quantize("cpu")
        layer.bias = linear.bias
        layer.support_avx512bf16_for_cpu = False  # keep the layout the kernel reads (bitsandbytes repacks for CPUs)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer)
    return model


def test_the_nf4_engines_greedy_replies_equal_generates_token_for_token(tiny_model_dir, qwen_tokenizer, sample_dir,
                                                                         monkeypatch):
    """The weight format is unchanged (the same NF4 values), so the engine's greedy replies are model.generate's
    on the same 4-bit model, and every decoding step went through the kernel."""
    from transformers import AutoModelForCausalLM

    from mcqtune.core.reasoning import generate_replies
    from mcqtune.data.questions import PromptStyle, load_mcq_csv
    from mcqtune.model.prompts import encode_prompts

    model = quantised(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval())
    frame = load_mcq_csv(sample_dir / "test.csv").head(6)
    prompts = encode_prompts(qwen_tokenizer, frame, PromptStyle(reasoning=True), 512)
    calls = []
    kernel = nf4.nf4_matmul
    monkeypatch.setattr(nf4, "nf4_matmul", lambda x, *a, **kw: calls.append(x.shape[0]) or kernel(x, *a, **kw))
    stops = [qwen_tokenizer.pad_token_id]
    padded = generate_replies(model, qwen_tokenizer, prompts, 10, stops, repetition_penalty=1.0)
    assert not calls  # outside the engine bitsandbytes computes
    fused = generate_replies(model, qwen_tokenizer, prompts, 10, stops, repetition_penalty=1.0, engine="nf4")
    assert fused == padded
    layers = nf4.nf4_layers(model)
    decoding = [rows for rows in calls if rows <= len(prompts)]
    assert len(decoding) >= len(layers) * 9  # every layer in each of the 9 decoding steps after the prompts
    assert all("forward" not in layer.__dict__ for layer in layers)  # the class's forward again afterwards


def test_weights_repacked_for_cpus_are_refused_not_misread():
    weight = torch.randn(16, 128)
    packed, state = bnb_functional.quantize_4bit(weight, blocksize=64, quant_type="nf4")
    state.packing_format_for_cpu = True
    with pytest.raises(nf4.ConfigError, match="repacked for bitsandbytes' CPU kernels"):
        nf4.nf4_matmul(torch.randn(2, 128), packed, state)


def test_codes_held_in_a_wider_storage_dtype_are_read_as_their_bytes():
    """bnb_4bit_quant_storage (FSDP-QLoRA checkpoints) keeps the same packed bytes in bfloat16 or float32 elements."""
    torch.manual_seed(2)
    weight = torch.randn(40, 256)
    packed, state = bnb_functional.quantize_4bit(weight, blocksize=64, quant_type="nf4", quant_storage=torch.float32)
    assert packed.dtype == torch.float32
    x = torch.randn(3, 256)
    torch.testing.assert_close(nf4.nf4_matmul(x, packed, state), reference(x, packed, state), rtol=2e-3, atol=1e-4)
