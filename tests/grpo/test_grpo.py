"""train_grpo.py on the tiny model: a run from an SFT adapter changes it and logs its rewards; an interrupted run
resumes to the uninterrupted adapter; reasoning replies train and validate; bad invocations stop in one line."""

import json

import pytest
import torch
from safetensors.torch import load_file

from mcqtune.config_files import config_dir
from mcqtune.errors import ConfigError
from mcqtune.grpo import run as grpo
from mcqtune.grpo.options import make_parser
from mcqtune.runs.provenance import ProvenanceError
from tests.helpers import run_script, stop_after_save

SHORT = ("--max_steps", 4, "--eval_steps", 2, "--save_steps", 2, "--logging_steps", 1)


def grpo_args(model_dir, train_file, output_dir, *extra):
    argv = ["--config", str(config_dir() / "demo-grpo-cpu.yaml"), "--model_name_or_path", str(model_dir),
            "--train_file", str(train_file), "--output_dir", str(output_dir), *map(str, extra)]
    return make_parser().parse_args_and_config(argv)


def adapter_weights(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def grpo_run(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo")
    start = trained_run["dir"] / "adapter"
    summary = grpo.run(*grpo_args(trained_run["model_dir"], trained_run["sample_dir"] / "train.csv", out,
                                   "--adapter", start, *SHORT))
    return {"dir": out, "summary": summary, "start": start, **{k: trained_run[k] for k in ("model_dir", "sample_dir")}}


@pytest.mark.slow
def test_a_run_from_an_sft_adapter_changes_it_and_records_rewards_and_provenance(grpo_run):
    summary, out = grpo_run["summary"], grpo_run["dir"]
    before, after = adapter_weights(grpo_run["start"]), adapter_weights(out / "adapter")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert summary["steps"] == 4 and len(summary["rewards"]) == 4
    assert all(0 <= e["rewards/correct/mean"] <= 1 and "replies/no_letter" in e for e in summary["rewards"])
    assert summary["label_letters"] == {letter: summary["prompts"] // 4 for letter in "ABCD"}
    assert summary["best_eval_accuracy"] is not None and summary["rollout_tokens"] > 0
    record = json.loads((out / "adapter" / "mcq_provenance.json").read_text())
    assert record["reinforced"]["method"] == "grpo"
    assert record["reinforced"]["start_adapter"]["adapter_model.safetensors_sha256"]
    assert (out / "checkpoint-4" / "mcq_checkpoint.json").is_file()


@pytest.mark.slow
def test_infer_answers_with_the_reinforced_adapter(grpo_run, tmp_path):
    result = run_script("infer.py", "--model_path", grpo_run["dir"] / "adapter", "--base_model_id",
                        grpo_run["model_dir"], "--test_file", grpo_run["sample_dir"] / "test.csv", "--output_file",
                        tmp_path / "submission.csv", "--backend", "hf", "--load_in_4bit", "false")
    assert result.returncode == 0, result.stderr[-2000:]
    assert len((tmp_path / "submission.csv").read_text().splitlines()) > 1


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_uninterrupted_adapter(grpo_run, tmp_path):
    argv = (grpo_run["model_dir"], grpo_run["sample_dir"] / "train.csv", tmp_path, "--adapter", grpo_run["start"],
            *SHORT)
    with stop_after_save(grpo, 2):
        grpo.run(*grpo_args(*argv))
    assert (tmp_path / "checkpoint-2").is_dir() and not (tmp_path / "adapter").exists()
    summary = grpo.run(*grpo_args(*argv, "--resume", "true"))
    assert summary["steps"] == 4
    whole, resumed = adapter_weights(grpo_run["dir"] / "adapter"), adapter_weights(tmp_path / "adapter")
    for key in whole:
        assert torch.allclose(whole[key], resumed[key], atol=1e-6), key
    from mcqtune.training.checkpoints import ResumeError

    with pytest.raises(ResumeError, match="another learning_rate"):
        grpo.run(*grpo_args(*argv, "--resume", "true", "--learning_rate", 0.5))


@pytest.mark.slow
def test_reasoning_replies_train_and_are_validated_by_reasoning(tiny_model_dir, sample_dir, tmp_path):
    summary = grpo.run(*grpo_args(tiny_model_dir, sample_dir / "train.csv", tmp_path, "--reasoning", "true",
                                   "--max_completion_length", 64, "--max_steps", 1, "--eval_steps", 1,
                                   "--save_steps", 1, "--per_device_eval_batch_size", 16, "--val_fraction", 0.05,
                                   "--format_reward_weight", 0.5))
    assert summary["steps"] == 1
    step = summary["rewards"][0]
    assert "rewards/correct/mean" in step and "rewards/format/mean" in step
    evaluation = next(e for e in summary["log_history"] if "eval_accuracy" in e)
    assert 0 <= evaluation["eval_closed_share"] <= 1  # validated by reasoning replies, not by letter scoring
    record = json.loads((tmp_path / "adapter" / "mcq_provenance.json").read_text())
    assert record["prompt"]["reasoning"] is True  # infer.py answers it only in --mode reason


@pytest.mark.parametrize("extra,message", [
    (("--enable_thinking", "true"), "add --reasoning true"),
    (("--reward_weights", "1", "2"), "format_reward_weight"),
    (("--format_reward_weight", "-1"), "format_reward_weight must be >= 0"),
    (("--reasoning", "true", "--max_completion_length", "16"), "reasoning replies need room"),
    (("--adapter", "somewhere", "--beta", "0.04"), "the KL term's reference would be the base model"),
    (("--rollout_engine", "nf4", "--load_in_4bit", "false"), "rollout_engine nf4 reads NF4 weights"),
    (("--max_completion_length", "0"), "max_completion_length must be >= 1, got 0"),
    (("--temperature", "0"), "temperature must be > 0, got 0.0: GRPO compares sampled replies"),
])
def test_impossible_settings_stop_before_loading(tiny_model_dir, sample_dir, tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        grpo.run(*grpo_args(tiny_model_dir, sample_dir / "train.csv", tmp_path, *extra))


def test_an_output_dir_holding_or_inside_the_adapter_is_refused_before_anything_moves(tiny_model_dir, sample_dir,
                                                                                      tmp_path):
    """GRPO from the adapter of an SFT run must not write into that run's folder: a fresh run there would move the
    adapter, its own input, aside first."""
    sft_run = tmp_path / "sft"
    (sft_run / "adapter").mkdir(parents=True)
    (sft_run / "adapter" / "adapter_config.json").write_text("{}")
    (sft_run / "training_summary.json").write_text("{}")
    for out, message in ((sft_run, "which a training run in output_dir"), (sft_run / "adapter", "lies inside the "
                                                                                               "--adapter")):
        with pytest.raises(ConfigError, match=message):
            grpo.run(*grpo_args(tiny_model_dir, sample_dir / "train.csv", out, "--adapter", sft_run / "adapter",
                                "--beta", 0))
    assert sorted(p.name for p in sft_run.iterdir()) == ["adapter", "training_summary.json"]  # nothing moved
    assert sorted(p.name for p in (sft_run / "adapter").iterdir()) == ["adapter_config.json"]


def test_nf4_rollouts_are_refused_where_they_cannot_run(monkeypatch, tiny_model_dir, sample_dir, tmp_path):
    with pytest.raises(ConfigError, match="add --backend hf"):
        grpo.check_rollout_engine("nf4", "unsloth")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="rollout_engine nf4 needs a CUDA GPU .*use --rollout_engine generate$"):
        grpo.run(*grpo_args(tiny_model_dir, sample_dir / "train.csv", tmp_path, "--rollout_engine", "nf4",
                            "--backend", "hf"))
    with pytest.raises(ConfigError, match="decodes at most 256 replies a step"):
        grpo.run(*grpo_args(tiny_model_dir, sample_dir / "train.csv", tmp_path, "--rollout_engine", "nf4",
                            "--per_device_train_batch_size", 512, "--num_generations", 8))


@pytest.mark.slow
def test_nf4_rollouts_decode_inside_the_fused_kernel_and_are_counted(tiny_model_dir, sample_dir, tmp_path,
                                                                    monkeypatch):
    """Every rollout generates inside core/nf4.fused_nf4 (the kernel itself is checked in tests/core); the summary
    names the engine and adds up its calls."""
    import contextlib

    from mcqtune.core import nf4

    entered = []

    @contextlib.contextmanager
    def counting(model, option):
        assert option == "rollout_engine"  # its messages name GRPO's option
        entered.append(model)
        yield {"fused": 3, "bitsandbytes": 1}

    monkeypatch.setattr(nf4, "fused_nf4", counting)
    monkeypatch.setattr(grpo, "check_rollout_engine", lambda engine, backend, *rest: None)  # no GPU here
    summary = grpo.run(*grpo_args(tiny_model_dir, sample_dir / "train.csv", tmp_path, "--rollout_engine", "nf4",
                                   "--max_steps", 1, "--save_steps", 1, "--eval_strategy", "no",
                                   "--load_best_model_at_end", "false"))
    assert summary["rollout_engine"] == "nf4" and summary["rollout_tokens"] > 0 and entered
    assert summary["rollout_kernel_calls"] == {"fused": 3 * len(entered), "bitsandbytes": len(entered)}
    assert summary["run_identity"]["rollout_engine"] == "nf4"


@pytest.mark.parametrize("extra,message", [
    (("--repetition_penalty", "1.1"), "pass --repetition_penalty 1.0, or --rollout_engine generate to keep 1.1"),
    (("--min_p", "0.1"), "temperature, top_p and top_k only: drop --min_p"),
    (("--generation_kwargs", '{"min_new_tokens": 8}'), "drop min_new_tokens from --generation_kwargs, or use "
                                                         "--rollout_engine generate$"),
    (("--generation_kwargs", '{"top_k": 5}'), "reads top_k from its own options: pass --top_k ... instead of "
                                              "--generation_kwargs$"),
    (("--use_transformers_continuous_batching", "true"), "makes the rollouts itself: drop "
                                                         "--use_transformers_continuous_batching"),
])
def test_continuous_rollouts_refuse_what_continuous_batching_would_drop(tiny_model_dir, sample_dir, tmp_path, extra,
                                                                        message):
    with pytest.raises(ConfigError, match=message):
        grpo.run(*grpo_args(tiny_model_dir, sample_dir / "train.csv", tmp_path, "--rollout_engine", "continuous",
                            "--backend", "hf", *extra))


def test_continuous_rollouts_are_refused_where_they_cannot_run(tmp_path):
    from transformers import MistralConfig

    with pytest.raises(ConfigError, match="^rollout_engine continuous runs transformers' own layers, which the "
                                          "unsloth backend's generation replaces: add --backend hf$"):
        grpo.check_rollout_engine("continuous", "unsloth")
    with pytest.raises(ConfigError, match="runs in one process, not 2: launch one process"):
        grpo.check_rollout_engine("continuous", "hf", 2)
    MistralConfig(num_hidden_layers=2).save_pretrained(tmp_path)  # sliding-window layers: varlen refuses them
    with pytest.raises(ConfigError, match="sliding-window layers: use --rollout_engine generate$"):
        grpo.check_rollout_engine("continuous", "hf", 1, str(tmp_path))


def test_continuous_rollouts_sample_as_trls_generation_config_says(monkeypatch):
    """Temperature, top_p, top_k, the reply budget and the stop tokens reach continuous batching; the seed comes
    from torch's generator (each call samples afresh; the trainer's seed and a resumed checkpoint set it); the
    policy is put back in training mode; a refusal names GRPO's options."""
    from types import SimpleNamespace

    from transformers import GenerationConfig

    from mcqtune.core import continuous
    from mcqtune.core.engines import GRPO_REMEDIES
    from mcqtune.grpo.trainer import MCQGRPOTrainer

    seen = []
    monkeypatch.setattr(continuous, "continuous_replies",
                        lambda model, tokenizer, prompts, budget, stops, **kwargs: seen.append(
                            (model.training, budget, stops, kwargs)) or [[7, 2]] * len(prompts))
    model = torch.nn.Linear(2, 2).train()
    trainer = SimpleNamespace(
        generation_config=GenerationConfig(do_sample=True, temperature=0.7, top_p=0.9, top_k=20, max_new_tokens=33),
        accelerator=SimpleNamespace(unwrap_model=lambda m: m), model=model, processing_class=None,
        eos_token_ids=[2, 5])
    torch.manual_seed(0)
    first = MCQGRPOTrainer.continuous_rollouts(trainer, [[1], [1]])
    MCQGRPOTrainer.continuous_rollouts(trainer, [[1]])
    torch.manual_seed(0)
    MCQGRPOTrainer.continuous_rollouts(trainer, [[1]])
    assert first == [[7, 2], [7, 2]] and model.training
    (training, budget, stops, kwargs), second, again = seen
    assert not training and budget == 33 and stops == [2, 5] and kwargs["remedies"] == GRPO_REMEDIES
    assert (kwargs["temperature"], kwargs["top_p"], kwargs["top_k"], kwargs["attention"]) == (0.7, 0.9, 20, "varlen")
    assert kwargs["seed"] != second[3]["seed"] and kwargs["seed"] == again[3]["seed"]


@pytest.mark.slow
def test_continuous_rollouts_are_the_policys_own_greedy_replies_with_its_lora(trained_run, tmp_path, monkeypatch):
    """From an SFT adapter (its LoRA changes the replies), on 4-bit weights, each rollout through continuous
    batching and varlen attention equals TRL's own generate path on the same prompts, both greedy; the run then
    trains on them (on a CPU, bitsandbytes would repack the 4-bit weights for inference once continuous batching
    puts the model in eval mode, and the next training step would fail: model/loading.keep_training_layout)."""
    from mcqtune.grpo.trainer import MCQGRPOTrainer
    from trl import GRPOTrainer

    compared = []
    continuous = MCQGRPOTrainer.continuous_rollouts

    def greedy_both(self, prompt_ids):
        sampled = self.generation_config.do_sample, self.generation_config.temperature
        self.generation_config.do_sample, self.generation_config.temperature = False, None
        try:
            packed = continuous(self, prompt_ids)
            padded, _ = GRPOTrainer._generate_single_turn(self, prompt_ids, None, {}, 1)
        finally:
            self.generation_config.do_sample, self.generation_config.temperature = sampled
        compared.append((packed, [list(map(int, reply)) for reply in padded]))
        return packed

    monkeypatch.setattr(MCQGRPOTrainer, "continuous_rollouts", greedy_both)
    summary = grpo.run(*grpo_args(trained_run["model_dir"], trained_run["sample_dir"] / "train.csv", tmp_path,
                                   "--adapter", trained_run["dir"] / "adapter", "--rollout_engine", "continuous",
                                   "--backend", "hf", "--max_completion_length", 12,
                                   "--max_steps", 2, "--save_steps", 2, "--eval_strategy", "no",
                                   "--load_best_model_at_end", "false"))
    assert len(compared) == 2 and all(packed == padded for packed, padded in compared)
    assert any(len(reply) > 1 for packed, _ in compared for reply in packed)
    assert summary["rollout_engine"] == "continuous" and summary["rollout_tokens"] > 0
    assert summary["run_identity"]["rollout_engine"] == "continuous"


@pytest.mark.slow
def test_continuous_rollouts_resume_to_the_uninterrupted_adapter(trained_run, tmp_path):
    """Their sampling seed comes from the trainer's generator, which a checkpoint keeps: a run killed after step 2
    and resumed samples the same replies, so it ends with the uninterrupted run's adapter."""
    def argv(out, *extra):
        return grpo_args(trained_run["model_dir"], trained_run["sample_dir"] / "train.csv", out, "--adapter",
                         trained_run["dir"] / "adapter", "--rollout_engine", "continuous", "--backend", "hf",
                         "--load_in_4bit", "false", "--max_steps", 4, "--save_steps", 2, "--eval_strategy", "no",
                         "--load_best_model_at_end", "false", *extra)

    grpo.run(*argv(tmp_path / "whole"))
    with stop_after_save(grpo, 2):
        grpo.run(*argv(tmp_path / "cut"))
    summary = grpo.run(*argv(tmp_path / "cut", "--resume", "true"))
    assert summary["steps"] == 4 and summary["rollout_engine"] == "continuous"
    whole, resumed = adapter_weights(tmp_path / "whole" / "adapter"), adapter_weights(tmp_path / "cut" / "adapter")
    assert any(not torch.equal(whole[k], adapter_weights(trained_run["dir"] / "adapter")[k]) for k in whole)
    for key in whole:
        assert torch.allclose(whole[key], resumed[key], atol=1e-6), key


@pytest.mark.slow
def test_reasoning_validation_takes_the_continuous_rollouts_engine(tiny_model_dir, sample_dir, tmp_path, monkeypatch):
    from mcqtune.core import continuous

    calls = []
    replies = continuous.continuous_replies

    def counting(*args, **kwargs):
        calls.append((kwargs["attention"], "top_p" in kwargs))
        return replies(*args, **kwargs)

    monkeypatch.setattr(continuous, "continuous_replies", counting)
    summary = grpo.run(*grpo_args(tiny_model_dir, sample_dir / "train.csv", tmp_path, "--reasoning", "true",
                                   "--rollout_engine", "continuous", "--backend", "hf", "--max_completion_length", 64,
                                   "--max_steps", 1, "--eval_steps", 1, "--save_steps", 1,
                                   "--per_device_eval_batch_size", 16, "--val_fraction", 0.05))
    evaluation = next(e for e in summary["log_history"] if "eval_accuracy" in e)
    assert 0 <= evaluation["eval_closed_share"] <= 1
    rollouts = [attention for attention, sampled in calls if sampled]  # the rollouts pass their sampling settings
    assert rollouts == ["varlen"] and len(calls) > 1 and {a for a, _ in calls} == {"varlen"}


def test_an_adapter_trained_with_other_prompt_settings_is_refused(trained_run, tmp_path):
    args = grpo_args(trained_run["model_dir"], trained_run["sample_dir"] / "train.csv", tmp_path,
                     "--adapter", trained_run["dir"] / "adapter", "--system_prompt", "你是助手。")
    with pytest.raises(ProvenanceError, match="another --system_prompt"):
        grpo.run(*args)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no adapter_config.json"):
        grpo.run(*grpo_args(trained_run["model_dir"], trained_run["sample_dir"] / "train.csv", tmp_path / "out",
                             "--adapter", tmp_path / "empty"))
    import shutil

    bare = tmp_path / "bare-adapter"  # weights and config, but not the record of how it was trained
    shutil.copytree(trained_run["dir"] / "adapter", bare)
    (bare / "mcq_provenance.json").unlink()
    with pytest.raises(ProvenanceError, match="no mcq_provenance.json"):
        grpo.run(*grpo_args(trained_run["model_dir"], trained_run["sample_dir"] / "train.csv", tmp_path / "o",
                             "--adapter", bare))


def test_training_by_epochs_makes_one_pass_over_the_shuffled_rounds(tiny_model_dir, sample_dir, qwen_tokenizer,
                                                                    tmp_path):
    args, training_args = grpo_args(tiny_model_dir, sample_dir / "train.csv", tmp_path, "--max_steps", -1,
                                    "--num_train_epochs", 3)
    train, val = grpo.load_questions(args, training_args.seed)
    counts = {}
    grpo.build_datasets(qwen_tokenizer, train, val, args, training_args, 1, counts)
    assert counts["rounds"] == 3 and counts["prompts"] == 3 * len(train)
    assert training_args.num_train_epochs == 1.0  # three epochs are the three rounds, seen once


@pytest.mark.parametrize("config", sorted(p.name for p in config_dir().glob("*grpo*.yaml")
                                          if not p.name.endswith("defaults.yaml")))
def test_shipped_grpo_configs_parse_and_pass_the_checks(config, tmp_path):
    from mcqtune.grpo.options import check_grpo_config

    args, training_args = make_parser().parse_args_and_config(["--config", str(config_dir() / config),
                                                                "--output_dir", str(tmp_path)])
    check_grpo_config(args, training_args)
    replies = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    assert replies % training_args.num_generations == 0
    if "14b" in config:  # the 24 GB recipes: 4 questions x 8 replies per step, as measured (bench/RESULTS.md)
        assert (replies, training_args.num_generations) == (32, 8) and args.load_in_4bit
        assert training_args.max_completion_length == (512 if args.reasoning else 8)


def test_a_bad_option_is_one_line_from_the_command(tmp_path):
    result = run_script("train_grpo.py", "--config", "demo-grpo-cpu.yaml", "--num_generations", "1",
                        "--output_dir", tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: bad option: GRPO requires at least 2 generations"), result.stderr[-2000:]
