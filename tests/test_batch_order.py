"""The shipped training configs parse and pass the checks; their batch order and embedding placement reach
the Trainer; length-grouped batches carry little padding."""

from types import SimpleNamespace

import pytest

import train_sft
from conftest import ROOT, train_args

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", [c for c in CONFIGS if not c.name.startswith("infer")], ids=lambda c: c.name)
def test_shipped_training_configs_parse_and_pass_the_checks(config, tmp_path):
    script_args, training_args = train_sft.make_parser().parse_args_and_config(
        ["--config", str(config), "--output_dir", str(tmp_path)])
    train_sft.check_config(script_args, training_args)
    assert training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps == (
        32 if "14b" in config.name else training_args.per_device_train_batch_size)
    assert training_args.padding_free is False


def test_the_4090_recipe_groups_lengths_and_keeps_the_embedding_in_host_memory(tmp_path):
    script_args, training_args = train_sft.make_parser().parse_args_and_config(
        ["--config", str(ROOT / "configs" / "qwen2.5-14b-4090.yaml"), "--output_dir", str(tmp_path)])
    assert training_args.train_sampling_strategy == "group_by_length"
    assert script_args.offload_embedding is True
    assert train_sft.embedding_offload_wanted(script_args, SimpleNamespace(world_size=1)) is True
    assert train_sft.embedding_offload_wanted(script_args, SimpleNamespace(world_size=2)) is False
    assert train_sft.embedding_offload_wanted(script_args, SimpleNamespace(world_size=1), "hf") is False


def padding_share(trainer) -> tuple[float, list[int]]:
    padded = real = 0
    widths = []
    for batch in trainer.get_train_dataloader():
        mask = batch["attention_mask"]
        padded += mask.numel()
        real += int(mask.sum())
        widths.append(mask.shape[1])
    return 1 - real / padded, widths


@pytest.mark.slow
def test_length_grouped_batches_carry_less_padding_than_random_ones(tiny_model_dir, sample_dir, tmp_path):
    shares = {}
    model = tokenizer = None
    for order in ("random", "group_by_length"):
        script_args, training_args = train_args(tiny_model_dir, sample_dir / "train.csv", tmp_path / order,
                                                "--train_sampling_strategy", order,
                                                "--per_device_train_batch_size", 8)
        train, val = train_sft.load_splits(script_args, training_args.seed)
        if model is None:
            model, tokenizer = train_sft.load_model(script_args, training_args, train_sft.select_backend("auto"))
        train_ds, val_ds = train_sft.build_datasets(tokenizer, train, val, script_args)
        trainer = train_sft.build_trainer(model, tokenizer, train_ds, val_ds, val, script_args, training_args)
        shares[order], widths = padding_share(trainer)
        if order == "group_by_length":
            assert widths[0] == max(widths)  # the longest batch first: running out of memory shows at once
    assert shares["group_by_length"] < shares["random"] / 2, shares
