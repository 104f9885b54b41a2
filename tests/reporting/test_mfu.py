"""reporting/mfu.py: FLOPs per real token from the model's config, the card's peak by name, and their ratio."""

import pytest
import torch

from mcqtune.reporting.mfu import block_parameters, flops_per_token, peak_flops, utilisation
from mcqtune.tiny.families import build_family_config
from mcqtune.tiny.qwen import build_model_config


def projection_weights(config) -> int:
    """The attention and MLP projection weights of a model built from ``config`` (no biases, norms or
    embeddings), counted from the modules themselves."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    return sum(module.weight.numel() for name, module in model.named_modules() if name.split(".")[-1] in names)


@pytest.mark.parametrize("config", [build_model_config("qwen2.5-14b"), build_model_config("tiny"),
                                    build_family_config("qwen3", "qwen3-14b"), build_family_config("gemma2")],
                         ids=["qwen2.5-14b", "tiny-qwen2", "qwen3-14b", "tiny-gemma2"])
def test_block_parameters_are_the_models_projection_weights(config):
    assert block_parameters(config) == projection_weights(config)


def test_training_counts_forward_and_backward_and_attention_grows_with_the_sequence():
    config = build_model_config("qwen2.5-14b")
    forward_short, forward_long = (flops_per_token(config, training=False, sequence=n) for n in (100, 200))
    assert forward_short == 2 * block_parameters(config) + 2 * 48 * 40 * 128 * 100
    assert forward_long - forward_short == 2 * 48 * 40 * 128 * 100
    assert flops_per_token(config, training=True, sequence=100) == 2 * forward_short


@pytest.mark.parametrize("name, peak", [("NVIDIA H200", 989.4e12), ("NVIDIA GeForce RTX 4090", 165.2e12),
                                        ("NVIDIA A100-SXM4-80GB", 312e12)])
def test_peak_is_found_by_device_name(name, peak):
    assert peak_flops(name)[0] == peak


def test_unknown_card_gives_no_utilisation_and_says_why():
    result = utilisation(1000.0, build_model_config("tiny"), training=True, device_name="Some Future GPU")
    assert result["mfu"] is None and "no peak rate on record for Some Future GPU" in result["peak_flops_source"]


def test_utilisation_is_achieved_flops_over_the_peak():
    config = build_model_config("qwen2.5-14b")
    per_token = flops_per_token(config, training=True, sequence=126)
    tokens_per_second = 0.2 * 989.4e12 / per_token  # what 20% of an H200 would process
    assert utilisation(tokens_per_second, config, training=True, device_name="NVIDIA H200",
                       sequence=126)["mfu"] == pytest.approx(0.2, abs=1e-4)
