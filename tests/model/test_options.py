"""model/options.py: the shared model flags are declared once and reach both parsers alike; the quantisation config
is QLoRA's; add_lora builds the adapters the LoRA options name."""

import dataclasses

import pytest
import torch

from mcqtune.infer import options as infer_options
from mcqtune.infer import run as infer
from mcqtune.train import sft as train_sft
from mcqtune.train import options as train_options
from mcqtune.model.options import (LORA_TARGETS, InferenceWeightOptions, LoraOptions, WeightOptions, check_lora_options,
                           quantization_config)


def _actions(parser) -> dict:
    """Each option's first action (a bool option also gets a --no_<name> action after it)."""
    actions = {}
    for action in parser._actions:
        actions.setdefault(action.dest, action)
    return actions


def _flags(parser, dest) -> list[str]:
    return [flag for action in parser._actions if action.dest == dest for flag in action.option_strings]


def _field(options_class, name):
    return next(f for f in dataclasses.fields(options_class) if f.name == name)


@pytest.mark.parametrize("arguments, shared", [
    (train_sft.ScriptArguments, (WeightOptions, LoraOptions)),
    (infer.InferArguments, (InferenceWeightOptions,)),
], ids=["train_sft", "infer"])
def test_each_model_option_is_inherited_not_declared_again(arguments, shared):
    for options_class in shared:
        for declared in dataclasses.fields(options_class):
            assert _field(arguments, declared.name) is declared, declared.name  # the same field, not a copy


def test_both_parsers_expose_the_shared_flags_with_the_same_defaults_and_help():
    train_parser, infer_parser = train_options.make_parser(), infer_options.make_parser()
    train, answer = _actions(train_parser), _actions(infer_parser)
    for declared in dataclasses.fields(WeightOptions):
        assert _flags(train_parser, declared.name) == _flags(infer_parser, declared.name)
        assert _flags(train_parser, declared.name)[0] == f"--{declared.name}"
        for parser in (train, answer):
            action = parser[declared.name]
            assert action.default == declared.default and action.help == declared.metadata["help"]
        assert train[declared.name].choices == answer[declared.name].choices
        assert train[declared.name].type == answer[declared.name].type
    assert train["backend"].choices == answer["backend"].choices == ["auto", "unsloth", "hf"]
    assert train["backend"].default == "auto" and train["load_in_4bit"].default is True


def test_the_inference_only_loading_flags_are_not_training_flags():
    """Training takes trust_remote_code from TRL's SFTConfig, and has no 8-bit, offload, ladder or pickle flags."""
    train = _actions(train_options.make_parser())
    answer = _actions(infer_options.make_parser())
    only_inference = {f.name for f in dataclasses.fields(InferenceWeightOptions)} - {
        f.name for f in dataclasses.fields(WeightOptions)}
    assert only_inference == {"load_in_8bit", "offload", "fallback_ladder", "allow_pickle", "trust_remote_code"}
    assert all(answer[name].default is False for name in only_inference)
    assert not (only_inference - {"trust_remote_code"}) & set(train)
    assert not any(f.name == "trust_remote_code" for f in dataclasses.fields(train_sft.ScriptArguments))


def test_the_lora_flags_parse_into_the_training_options(tmp_path):
    script_args, _ = train_options.make_parser().parse_args_and_config(
        ["--train_file", "t.csv", "--model_name_or_path", "m", "--output_dir", str(tmp_path), "--lora_r", "8",
         "--lora_alpha", "4", "--lora_dropout", "0", "--lora_target_modules", "q_proj", "v_proj",
         "--load_in_4bit", "false", "--backend", "hf"])
    assert (script_args.lora_r, script_args.lora_alpha, script_args.lora_dropout) == (8, 4, 0.0)
    assert script_args.lora_target_modules == ["q_proj", "v_proj"]
    assert script_args.load_in_4bit is False and script_args.backend == "hf"
    defaults = LoraOptions()
    assert (defaults.lora_r, defaults.lora_alpha, defaults.lora_dropout) == (16, 32, 0.05)
    assert defaults.lora_target_modules == list(LORA_TARGETS) and defaults.lora_target_modules is not LORA_TARGETS


@pytest.mark.parametrize("options, problems", [
    ({}, []),
    ({"lora_r": 0}, ["lora_r and lora_alpha must be positive"]),
    ({"lora_alpha": -1, "lora_dropout": 1.0}, ["lora_r and lora_alpha must be positive",
                                               "lora_dropout must be in [0, 1), got 1.0"]),
    ({"lora_dropout": -0.1}, ["lora_dropout must be in [0, 1), got -0.1"]),
])
def test_bad_lora_options_are_named(options, problems):
    assert check_lora_options(LoraOptions(**options)) == problems


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_4bit_is_nf4_with_double_quantisation_computing_in_the_given_dtype(dtype):
    config = quantization_config(load_in_4bit=True, load_in_8bit=False, compute_dtype=dtype)
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant is True
    assert config.bnb_4bit_compute_dtype == dtype


def test_8bit_and_unquantised_configs():
    eight = quantization_config(load_in_4bit=False, load_in_8bit=True, compute_dtype=torch.bfloat16)
    assert eight.load_in_8bit and not eight.load_in_4bit
    assert quantization_config(load_in_4bit=False, load_in_8bit=False, compute_dtype=torch.float32) is None


LORA = LoraOptions(lora_r=4, lora_alpha=8, lora_dropout=0.1, lora_target_modules=["q_proj", "down_proj"])


def test_add_lora_builds_the_adapters_the_options_name(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from mcqtune.model.loading import add_lora

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = add_lora(base, "hf", LORA, gradient_checkpointing=False)
    config = model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 8, 0.1)
    assert set(config.target_modules) == {"q_proj", "down_proj"}
    trained = {name.split(".")[-4] for name, p in model.named_parameters() if p.requires_grad}
    assert trained == {"q_proj", "down_proj"}


def test_add_lora_passes_the_options_to_unsloth(monkeypatch):
    unsloth = pytest.importorskip("unsloth")
    seen = {}

    def get_peft_model(model, **kwargs):
        seen.update(kwargs)
        return model

    monkeypatch.setattr(unsloth.FastLanguageModel, "get_peft_model", staticmethod(get_peft_model))
    from mcqtune.model.loading import add_lora

    add_lora(block_model(), "unsloth", LORA, gradient_checkpointing=True, seed=7)
    assert (seen["r"], seen["lora_alpha"], seen["lora_dropout"]) == (4, 8, 0.1)
    assert seen["target_modules"] == ["q_proj", "down_proj"] and seen["random_state"] == 7
    assert seen["use_gradient_checkpointing"] == "unsloth"


def block_model(names=("q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj")):
    """A stand-in causal LM: blocks of linear layers under ``model.layers``, and an output layer."""
    import torch

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for name in names:
                setattr(self, name, torch.nn.Linear(2, 2))

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torch.nn.Module()
            self.model.layers = torch.nn.ModuleList([Block(), Block()])
            self.lm_head = torch.nn.Linear(2, 5)

        def get_output_embeddings(self):
            return self.lm_head

    return Model()


def test_the_default_lora_targets_follow_the_architecture_and_a_missing_name_is_refused():
    from mcqtune.errors import ConfigError
    from mcqtune.model.loading import resolve_lora_targets
    from mcqtune.model.options import LORA_TARGETS

    glm = block_model()  # GLM-4's fused gate_up_proj: the default list would miss it
    assert resolve_lora_targets(glm, LORA_TARGETS) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj",
                                                       "down_proj"]
    assert resolve_lora_targets(glm, ["q_proj", "gate_up_proj"]) == ["q_proj", "gate_up_proj"]
    with pytest.raises(ConfigError, match="gate_proj is not a linear layer of this model; its layers are q_proj"):
        resolve_lora_targets(glm, ["q_proj", "gate_proj"])
    assert "lm_head" not in resolve_lora_targets(block_model(LORA_TARGETS), LORA_TARGETS)


def test_the_inference_loading_options_are_taken_out_of_infer_arguments_with_the_backend_resolved():
    args = infer.InferArguments(test_file="t.csv", model_path="m", load_in_8bit=True, allow_pickle=True,
                                trust_remote_code=True, offload=True)
    weights = InferenceWeightOptions.of(args, backend="hf")
    assert type(weights) is InferenceWeightOptions and not hasattr(weights, "test_file")
    assert weights == InferenceWeightOptions(backend="hf", load_in_4bit=True, load_in_8bit=True, offload=True,
                                             fallback_ladder=False, allow_pickle=True, trust_remote_code=True)
    assert args.backend == "auto"  # the options themselves are left as parsed
