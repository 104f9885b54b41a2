"""core/fp8.py: weights made for decoding. Fp8Linear is the arithmetic of its e4m3 values and scales; the
conversion merges every active LoRA adapter into the weights it quantises and leaves the embeddings and the output
layer alone; the fp8 engine's replies are those of model.generate on the same FP8 weights; and it is refused in one
line where it cannot run."""

import pytest

from mcqtune.errors import ConfigError

E4M3_STEP = 2.0 ** -4  # half the spacing of e4m3's 3-bit mantissa, relative to the value
E4M3_TINY = 2.0 ** -9  # e4m3's smallest subnormal, relative to the row's scale (448 = the largest value)


def reference(layer, x):
    """The same e4m3 activations and weights with their scales, multiplied in float64."""
    import torch

    x = x.double()
    x_scale = (x.abs().amax(dim=-1, keepdim=True) / torch.finfo(torch.float8_e4m3fn).max).clamp(min=1e-12)
    xq = (x / x_scale).to(torch.float8_e4m3fn).double() * x_scale
    out = xq @ (layer.weight.double() * layer.scale.double().reshape(-1, 1)).t()
    return out + (layer.bias.double() if layer.bias is not None else 0)


@pytest.mark.parametrize("bias", [True, False])
def test_fp8_linear_computes_its_quantised_arithmetic(bias):
    import torch

    from mcqtune.core.fp8 import Fp8Linear

    torch.manual_seed(0)
    dense = torch.nn.Linear(96, 48, bias=bias)
    layer = Fp8Linear.from_weight(dense.weight, dense.bias)
    assert layer.weight.dtype == torch.float8_e4m3fn and layer.scale.shape == (1, 48)
    x = torch.randn(2, 5, 96)
    got = layer(x)
    assert got.shape == (2, 5, 48) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), reference(layer, x), rtol=1e-5, atol=1e-5)
    assert layer(x.bfloat16()).dtype == torch.bfloat16
    # and it is an approximation of the 16-bit layer, not another function
    exact = dense(x)
    assert ((got - exact).abs().mean() / exact.abs().mean()).item() < 0.1


def test_rows_are_quantised_within_e4m3s_precision():
    import torch

    from mcqtune.core.fp8 import quantize_rows

    torch.manual_seed(1)
    weight = torch.randn(32, 64) * torch.logspace(-3, 1, 32)[:, None]  # rows of very different sizes
    weight[3] = 0.0
    quantized, scale = quantize_rows(weight)
    back = quantized.float() * scale[:, None]
    assert torch.all((back - weight).abs() <= weight.abs() * E4M3_STEP + scale[:, None] * E4M3_TINY)
    assert torch.equal(back[3], weight[3])  # an all-zero row stays zero
    assert torch.allclose(back.abs().amax(dim=1)[scale > 1e-12], weight.abs().amax(dim=1)[scale > 1e-12])


def test_conversion_merges_the_adapter_and_keeps_the_head(tiny_model_dir, random_adapter):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mcqtune.core.fp8 import Fp8Linear, quantize_rows, to_fp8

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    expected = PeftModel.from_pretrained(base, random_adapter).merge_and_unload().state_dict()
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                                           random_adapter)
    model, converted = to_fp8(peft_model)
    assert not isinstance(model, PeftModel)
    layers = {name: m for name, m in model.named_modules() if isinstance(m, Fp8Linear)}
    assert converted == len(layers) == 7 * model.config.num_hidden_layers
    assert isinstance(model.get_output_embeddings(), torch.nn.Linear)
    torch.testing.assert_close(model.get_output_embeddings().weight, expected["lm_head.weight"])
    for name, layer in layers.items():
        weight = expected[f"{name}.weight"]
        quantized, scale = quantize_rows(weight)  # the merged weight, quantised: bit for bit what the layer holds
        assert torch.equal(layer.weight.view(torch.uint8), quantized.view(torch.uint8)), name
        torch.testing.assert_close(layer.scale.reshape(-1), scale)
    lora_touched = [n for n in layers if n.endswith(("q_proj", "v_proj"))]
    base_q = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    assert all(not torch.equal(expected[f"{n}.weight"], base_q[f"{n}.weight"]) for n in lora_touched)


def test_each_replaced_layer_is_freed_before_the_next_is_converted(tiny_model_dir, monkeypatch):
    """At 14B under 24 GiB the NF4 layers must go as their FP8 copies come, or both formats are held at once. A
    bitsandbytes 4-bit weight points back at its layer (a reference cycle, which reference counting never frees):
    the layers here are given the same cycle, and nothing but to_fp8 runs the cycle collector."""
    import weakref

    import torch
    from transformers import AutoModelForCausalLM

    from mcqtune.core import fp8

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    layers = [m for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and m is not model.get_output_embeddings()]
    for layer in layers:
        layer.weight.module = layer  # what bitsandbytes' Params4bit does
    originals = [weakref.ref(m) for m in layers]
    del layers, layer
    alive, convert = [], fp8.Fp8Linear.from_weight

    def counting(weight, bias=None):
        alive.append(sum(ref() is not None for ref in originals))
        return convert(weight, bias)

    monkeypatch.setattr(fp8.Fp8Linear, "from_weight", staticmethod(counting))
    fp8.to_fp8(model)
    # converting layer k, at most COLLECT_EVERY layers before it still wait for the collector; none after the end
    assert all(len(originals) - k <= count <= len(originals) - k + fp8.COLLECT_EVERY for k, count in enumerate(alive))
    assert len(originals) > fp8.COLLECT_EVERY and not any(ref() is not None for ref in originals)


def test_dora_is_refused_not_merged_wrongly(tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mcqtune.core.fp8 import to_fp8

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    with pytest.raises(ConfigError, match="does not merge DoRA"):
        to_fp8(model)


def test_the_fp8_engines_replies_are_generates_on_the_same_weights(tiny_model_dir, qwen_tokenizer, sample_dir):
    """The engine is the conversion plus continuous batching: on the converted weights its greedy replies equal
    model.generate's token for token (what FP8 itself changes is measured in bench/, not tuned here)."""
    import torch
    from transformers import AutoModelForCausalLM

    from mcqtune.core.reasoning import generate_replies
    from mcqtune.data.questions import PromptStyle, load_mcq_csv
    from mcqtune.model.prompts import encode_prompts
    from mcqtune.core.fp8 import to_fp8

    model, _ = to_fp8(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval())
    frame = load_mcq_csv(sample_dir / "test.csv").head(6)
    prompts = encode_prompts(qwen_tokenizer, frame, PromptStyle(reasoning=True), 512)
    with torch.inference_mode():
        first = model.generate(torch.tensor([prompts[0]]), max_new_tokens=12, do_sample=False,
                               pad_token_id=qwen_tokenizer.pad_token_id)[0, len(prompts[0]):].tolist()
    stops = [first[4], qwen_tokenizer.pad_token_id]
    padded = generate_replies(model, qwen_tokenizer, prompts, 12, stops, repetition_penalty=1.0)
    paged = generate_replies(model, qwen_tokenizer, prompts, 12, stops, repetition_penalty=1.0, engine="fp8")
    assert paged == padded
    assert paged[0] == (first[:4], True)


def test_the_fp8_engine_is_refused_where_it_cannot_run(monkeypatch):
    import torch

    from mcqtune.infer.setup import check_engine

    with pytest.raises(ConfigError, match="add --backend hf"):
        check_engine("fp8", "unsloth", 1)
    with pytest.raises(ConfigError, match="runs in one process, not 2"):
        check_engine("fp8", "hf", 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="has none: use --generation_engine generate$"):
        check_engine("fp8", "hf", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 6))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA GeForce RTX 3090")
    with pytest.raises(ConfigError, match="RTX 3090 has 8.6: use --generation_engine continuous or generate"):
        check_engine("fp8", "hf", 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 9))
    check_engine("fp8", "hf", 1)  # an RTX 4090


@pytest.mark.parametrize("options, message", [
    ({"mode": "score"}, "generation_engine fp8 applies to reason mode only, not score"),
    ({"mode": "reason"}, "pass --repetition_penalty 1.0, or --generation_engine generate to keep 1.1"),
])
def test_fp8_options_it_cannot_honour_are_refused(options, message):
    from mcqtune.infer.options import InferArguments
    from mcqtune.infer.setup import check_args

    args = InferArguments(test_file="t.csv", model_path="m", generation_engine="fp8", **options)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        check_args(args)


def test_an_infer_run_on_a_cpu_is_refused_before_loading(tiny_model_dir, sample_dir, tmp_path):
    from mcqtune.infer import run as infer
    from mcqtune.infer.options import InferArguments

    args = InferArguments(test_file=str(sample_dir / "test.csv"), model_path=str(tiny_model_dir), mode="reason",
                          repetition_penalty=1.0, generation_engine="fp8", backend="hf",
                          output_file=str(tmp_path / "sub.csv"))
    with pytest.raises(ConfigError, match="needs a CUDA GPU with FP8 tensor cores"):
        infer.run(args, "hf")
    assert not (tmp_path / "sub.csv").exists()
