"""runs/identity.py: every option is in a run's identity unless excluded with a reason; inputs count by content."""

import dataclasses

import pytest

from mcqtune.config_files import config_dir
from mcqtune.runs import identity as run_identity
from tests.helpers import train_args

# The options of infer.py and train_sft.py that are in the identity. Adding an option makes this test fail
# until it is either listed here (it decides the result: nothing to do) or excluded in mcqtune/runs/identity.py with
# the reason -- the decision the identity depends on.
INFER_INCLUDED = [
    "system_prompt", "user_template", "chat_template", "max_prompt_tokens", "enable_thinking", "test_file",
    "model_path",
    "base_model_id", "mode", "backend", "batch_size", "load_in_4bit", "load_in_8bit", "offload", "fallback_ladder",
    "allow_pickle", "max_new_tokens", "repetition_penalty", "permutations", "share_prefix", "debias_letters",
    "debias_sample", "rescore", "rescore_fraction", "ensemble", "max_reasoning_tokens", "reasoning_instruction",
    "temperature", "seed", "samples", "generation_engine", "paged_attention", "kv_cache_dtype", "async_batching",
    "trust_remote_code", "encoding", "number_rows"]
TRAIN_SCRIPT_INCLUDED = [
    "system_prompt", "user_template", "chat_template", "max_prompt_tokens", "enable_thinking", "train_file", "val_file",
    "extra_train_files", "extra_train_weights", "val_fraction",
    "model_name_or_path", "backend", "load_in_4bit", "max_answer_tokens", "lora_r", "lora_alpha", "lora_dropout",
    "lora_target_modules", "augment_permutations", "max_train_samples", "encoding", "folds", "fold", "loss",
    "reasoning_instruction", "reasoning_column", "distill_from", "distill_weight", "distill_temperature",
    "val_test_like", "pseudo_label_from", "pseudo_label_file", "pseudo_label_threshold", "answer_weight"]
GRPO_SCRIPT_INCLUDED = [
    "system_prompt", "user_template", "chat_template", "max_prompt_tokens", "enable_thinking", "reasoning_instruction",
    "backend", "load_in_4bit", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "train_file", "val_file",
    "val_fraction", "model_name_or_path", "adapter", "reasoning", "format_reward_weight", "max_train_samples",
    "encoding", "rollout_engine"]  # rollout_engine: the kernels sum in another order, so samples differ


def test_every_infer_option_is_in_the_identity_or_excluded_with_a_reason():
    from mcqtune.infer.run import InferArguments

    included = run_identity.included_fields(InferArguments, run_identity.INFER_EXCLUDED)
    assert sorted(included) == sorted(INFER_INCLUDED)
    assert set(run_identity.INFER_RESOLVED) <= set(included)
    assert all(reason.strip() for reason in run_identity.INFER_EXCLUDED.values())


def test_every_training_option_is_in_the_identity_or_excluded_with_a_reason():
    from mcqtune.train.options import ScriptArguments

    included = run_identity.included_fields(ScriptArguments, run_identity.TRAIN_SCRIPT_EXCLUDED)
    assert sorted(included) == sorted(TRAIN_SCRIPT_INCLUDED)
    assert set(run_identity.TRAIN_SCRIPT_RESOLVED) <= set(included)


def test_every_grpo_option_is_in_the_identity_or_excluded_with_a_reason():
    from mcqtune.grpo.options import GRPOArguments

    included = run_identity.included_fields(GRPOArguments, run_identity.GRPO_SCRIPT_EXCLUDED)
    assert sorted(included) == sorted(GRPO_SCRIPT_INCLUDED)
    assert set(run_identity.GRPO_SCRIPT_RESOLVED) <= set(included)
    assert all(reason.strip() for reason in run_identity.GRPO_SCRIPT_EXCLUDED.values())


def test_trainer_options_are_in_by_default_and_only_cadence_and_logging_are_left_out():
    from trl import SFTConfig

    included = set(run_identity.included_fields(SFTConfig, {}, run_identity.TRAINER_EXCLUDED_PREFIXES))
    for weight_changing in ("learning_rate", "seed", "data_seed", "max_steps", "num_train_epochs", "optim",
                            "per_device_train_batch_size", "gradient_accumulation_steps", "lr_scheduler_type",
                            "warmup_steps", "weight_decay", "max_grad_norm", "bf16", "fp16", "gradient_checkpointing",
                            "train_sampling_strategy", "max_length", "completion_only_loss", "dataloader_drop_last",
                            "padding_free", "packing"):
        assert weight_changing in included, weight_changing
    for cadence in ("logging_steps", "save_steps", "eval_steps", "output_dir", "report_to", "save_total_limit"):
        assert cadence not in included, cadence


def _another_value(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value + ["x"]
    return "x"


def test_changing_any_included_option_changes_the_identity():
    from mcqtune.infer.run import InferArguments

    args = InferArguments(test_file="t.csv", model_path="m")
    before = run_identity.options_identity(args, run_identity.INFER_EXCLUDED, {})
    for name in INFER_INCLUDED:
        other = dataclasses.replace(args, **{name: _another_value(getattr(args, name))})
        assert run_identity.options_identity(other, run_identity.INFER_EXCLUDED, {}) != before, name
    for name in run_identity.INFER_EXCLUDED:
        other = dataclasses.replace(args, **{name: _another_value(getattr(args, name))})
        assert run_identity.options_identity(other, run_identity.INFER_EXCLUDED, {}) == before, name


def test_resolving_an_unknown_option_is_an_error():
    from mcqtune.infer.run import InferArguments

    with pytest.raises(run_identity.IdentityError):
        run_identity.options_identity(InferArguments(), run_identity.INFER_EXCLUDED, {"no_such_option": 1})


def test_the_same_bytes_decoded_another_way_are_another_input(tmp_path):
    path = tmp_path / "big5.csv"
    path.write_bytes("ID,question,option_A,option_B,option_C,option_D\n1,臺灣的首府,甲,乙,丙,丁\n".encode("big5"))
    as_big5 = run_identity.csv_identity(path, "big5")
    as_gb = run_identity.csv_identity(path, "gb18030")  # decodes without an error, as mojibake
    assert as_big5["bytes_sha256"] == as_gb["bytes_sha256"] and as_big5 != as_gb


def test_training_identity_covers_encoding_and_file_contents(tiny_model_dir, sample_dir, tmp_path):
    def identity(*extra):
        script_args, training_args = train_args(tiny_model_dir, sample_dir / "train.csv", tmp_path, *extra)
        return run_identity.training_identity(script_args, training_args, model={"m": 1})

    base = identity()
    assert run_identity.changed_keys(base, identity("--encoding", "utf-8-sig")) == ["encoding"]
    assert run_identity.changed_keys(base, identity("--learning_rate", "1e-3")) == ["learning_rate"]
    assert run_identity.changed_keys(base, identity("--logging_steps", "7")) == []
    assert run_identity.changed_keys(base, identity("--offload_embedding", "true")) == []  # same weights
    assert run_identity.changed_keys(base, identity("--train_sampling_strategy", "group_by_length")) == [
        "train_sampling_strategy"]  # another batch order trains other weights


def test_chat_template_counts_by_its_text_whether_inline_or_a_file(tmp_path):
    template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    path = tmp_path / "t.jinja"
    path.write_text(template, encoding="utf-8")
    assert run_identity.template_identity(str(path)) == run_identity.template_identity(template)
    path.write_text(template + " ", encoding="utf-8")
    assert run_identity.template_identity(str(path)) != run_identity.template_identity(template)


def test_shipped_configs_parse_into_identities(tiny_model_dir, sample_dir, tmp_path):
    """Every Trainer value that comes out of a shipped YAML config can be put into an identity."""
    import json

    for config in ("qwen2.5-14b-4090.yaml", "qwen2.5-14b-16gb.yaml", "demo-cpu.yaml"):
        from mcqtune.train.options import make_parser

        argv = ["--config", str(config_dir() / config), "--model_name_or_path", str(tiny_model_dir),
                "--train_file", str(sample_dir / "train.csv"), "--output_dir", str(tmp_path)]
        script_args, training_args = make_parser().parse_args_and_config(argv)
        identity = run_identity.training_identity(script_args, training_args, model={"m": 1})
        assert json.loads(json.dumps(identity)) == identity


def test_the_seed_counts_only_for_sampled_replies(tmp_path):
    """Greedy replies use no seed: rerunning a finished greedy run with another --seed continues it; sampled
    replies (--temperature above 0) are another run under another seed."""
    from mcqtune.infer.run import InferArguments

    test = tmp_path / "t.csv"
    test.write_text("ID,question,option_A,option_B,option_C,option_D\n1,q,a,b,c,d\n", encoding="utf-8")

    def identity(**options):
        args = InferArguments(test_file=str(test), model_path="m", mode="reason", **options)
        return run_identity.inference_identity(args, base={}, adapter=None, ensemble=[], backend="hf", batch_size=4,
                                               precision="bf16", tokenizer_template=None, parser_sha256="p")

    assert identity(seed=0) == identity(seed=6)
    assert identity(seed=0, temperature=0.7) != identity(seed=6, temperature=0.7)
