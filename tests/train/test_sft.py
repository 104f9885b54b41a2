"""train/sft.py (train_sft.py): answer-only loss, learning on the CPU, export, resume, early failures; the shipped
training configs parse and pass the checks, their batch order and embedding placement reach the Trainer, and
length-grouped batches carry little padding."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from mcqtune.config_files import config_dir
from mcqtune.errors import ConfigError
from tests.helpers import ROOT, train_args
from tests.helpers import run_script, stop_after_save

from mcqtune.train import run as train_run

from mcqtune.train import sft as train_sft
from mcqtune.train import options as train_options
def test_loss_falls_only_on_answer_letter_and_im_end(tiny_model_dir, sample_dir, tmp_path):
    script_args, training_args = train_args(tiny_model_dir, sample_dir / "train.csv", tmp_path)
    backend = train_sft.select_backend(script_args.backend)
    train, val = train_sft.load_splits(script_args, training_args.seed)
    model, tokenizer = train_run.load_model(script_args, training_args, backend)
    train_ds, val_ds = train_run.build_datasets(tokenizer, train, val, script_args)
    trainer = train_run.build_trainer(model, tokenizer, train_ds, val_ds, val, script_args, training_args)
    batch = next(iter(trainer.get_train_dataloader()))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    letters = {tokenizer.convert_tokens_to_ids(x) for x in "ABCD"}
    assert batch["input_ids"].shape[0] == training_args.per_device_train_batch_size
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        length = int(mask.sum())
        labelled = (labels != -100).nonzero().flatten().tolist()
        assert labelled == [length - 2, length - 1]  # the answer letter and <|im_end|>, nothing else
        assert int(ids[length - 2]) in letters and int(ids[length - 1]) == im_end
        assert labels[length - 2] == ids[length - 2] and labels[length - 1] == im_end
        assert tokenizer.decode(ids[length - 5:length - 2]) == "<|im_start|>assistant\n"
        assert (labels[length:] == -100).all() and (mask[length:] == 0).all()  # padding carries no loss


@pytest.mark.slow
def test_training_learns_far_above_chance(trained_run):
    from mcqtune.infer import run as infer
    sample = trained_run["sample_dir"]
    summary = trained_run["summary"]
    untrained = infer.run(infer.InferArguments(test_file=str(sample / "test.csv"),
                                                model_path=str(trained_run["model_dir"]),
                                                output_file=str(trained_run["dir"] / "untrained.csv")))
    trained = infer.run(infer.InferArguments(test_file=str(sample / "test.csv"),
                                              model_path=str(trained_run["dir"] / "adapter"),
                                              output_file=str(trained_run["dir"] / "trained.csv")))
    assert 0.1 <= untrained["accuracy"] <= 0.4, "the untrained model must be near chance (25%)"
    assert trained["accuracy"] >= 0.6, f"held-out accuracy {trained['accuracy']} after training"
    assert summary["best_eval_accuracy"] >= 0.6
    accuracies = [e["eval_accuracy"] for e in summary["log_history"] if "eval_accuracy" in e]
    assert len(accuracies) >= 2 and max(accuracies) == summary["best_eval_accuracy"]


@pytest.mark.slow
def test_outputs_adapter_summary_and_curves(trained_run):
    out = trained_run["dir"]
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer_config.json", "tokenizer.json"):
        assert (out / "adapter" / name).is_file(), name
    assert not list((out / "adapter").glob("*.bin"))
    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["r"] == 16 and adapter_config["lora_alpha"] == 32
    assert set(adapter_config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                     "up_proj", "down_proj"}
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["best_checkpoint"] and summary["steps"] > 0 and summary["backend"] in ("unsloth", "hf")
    # warm-up, steady training, evaluation and checkpoint writes are timed apart
    # (the first step after each evaluation / checkpoint write is reported apart from the steady ones)
    assert summary["warmup_steps"] == 2 and summary["resume_steps"] >= 1
    assert summary["steady_steps"] == summary["steps"] - 2 - summary["resume_steps"]
    assert summary["steady_train_samples_per_second"] > 0 and summary["evaluations"] >= 2
    assert summary["eval_seconds"] > 0 and summary["saves"] >= 2
    steps = summary["step_seconds"]
    assert len(steps) == summary["steps"] and all(t > 0 for t in steps)
    assert abs(sum(steps[2:]) - summary["steady_seconds"] - summary["resume_seconds"]) < 0.02
    assert summary["between_steps_seconds"] >= 0
    evals = [e for e in summary["log_history"] if "eval_accuracy" in e]
    assert all(0 < e["eval_loss"] < 10 and e["eval_samples_per_second"] > 0 for e in evals)
    assert all((out / c).joinpath("mcq_checkpoint.json").is_file() for c in
               [p.name for p in out.glob("checkpoint-*")])  # every kept checkpoint is sealed
    png = (out / "training_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


@pytest.mark.slow
def test_merged_weights_give_the_same_logits_as_adapter(trained_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = trained_run["dir"]
    assert (out / "merged" / "model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(trained_run["model_dir"], dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(base, out / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32).eval()
    ids = torch.tensor([[151644, 8948, 198, 108386, 3837, 99489, 6313, 151645, 198, 151644, 77091, 198]])
    with torch.no_grad():
        a, b = with_adapter(ids).logits, merged(ids).logits
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()
    with torch.no_grad(), with_adapter.disable_adapter():
        plain = with_adapter(ids).logits
    assert (plain - a).abs().max() > 1e-3, "the adapter must change the logits (trained weights, not zeros)"


SHORT = ["--max_steps", 6, "--save_steps", 3, "--eval_steps", 3, "--max_train_samples", 96]


@pytest.fixture(scope="module")
def short_run(tiny_model_dir, sample_dir, tmp_path_factory):
    """An uninterrupted 6-step run with checkpoints at steps 3 and 6: what every resumed run must equal."""
    out = tmp_path_factory.mktemp("short")
    summary = train_sft.run(*train_args(tiny_model_dir, sample_dir / "train.csv", out, *SHORT))
    return {"dir": out, "summary": summary}


def assert_same_adapter(dir_a, dir_b):
    from safetensors.torch import load_file

    a = load_file(dir_a / "adapter" / "adapter_model.safetensors")
    b = load_file(dir_b / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


@pytest.mark.slow
def test_resume_gives_the_same_adapter_as_an_uninterrupted_run(short_run, tiny_model_dir, sample_dir, tmp_path):
    parted = tmp_path / "parted"
    with stop_after_save(train_run, 3):
        train_sft.run(*train_args(tiny_model_dir, sample_dir / "train.csv", parted, *SHORT))
    assert (parted / "checkpoint-3").is_dir() and not (parted / "adapter").exists()
    summary = train_sft.run(*train_args(tiny_model_dir, sample_dir / "train.csv", parted, *SHORT, "--resume", "true"))
    assert summary["steps"] == 6
    assert_same_adapter(short_run["dir"], parted)


KILL_DURING_SAVE = """
import os, signal, sys
from mcqtune.model.loading import select_backend
select_backend("auto")
import transformers
write_rng = transformers.Trainer._save_rng_state
def killed_while_saving(self, output_dir):  # the adapter and optimizer of this checkpoint are already written
    if self.state.global_step == int(os.environ["KILL_AT_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return write_rng(self, output_dir)
transformers.Trainer._save_rng_state = killed_while_saving
from mcqtune.cli import main
sys.exit(main(["train", *sys.argv[1:]]))
"""


@pytest.mark.slow
def test_kill_9_while_a_checkpoint_is_written_then_resume_ends_with_the_uninterrupted_adapter(
        short_run, tiny_model_dir, sample_dir, tmp_path):
    import os

    killed = tmp_path / "killed"
    argv = ["--config", "demo-cpu.yaml", "--model_name_or_path", tiny_model_dir, "--train_file",
            sample_dir / "train.csv", "--output_dir", killed, *SHORT]
    for resume in ("false", "true"):  # killed twice in a row while writing the same checkpoint
        result = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, *map(str, argv), "--resume", resume],
                                capture_output=True, text=True, cwd=ROOT, timeout=600,
                                env={**os.environ, "KILL_AT_STEP": "6"})
        assert result.returncode == -9, result.stderr[-2000:]
        half_written = killed / "checkpoint-6"
        assert (half_written / "adapter_model.safetensors").is_file()
        assert not (half_written / "mcq_checkpoint.json").exists()
    summary = train_sft.run(*train_args(tiny_model_dir, sample_dir / "train.csv", killed, *SHORT, "--resume", "true"))
    assert summary["steps"] == 6
    # both half-written copies set aside, never loaded, under names that do not collide
    assert (killed / "incomplete-checkpoint-6").is_dir() and (killed / "incomplete-checkpoint-6-2").is_dir()
    assert (killed / "checkpoint-6" / "mcq_checkpoint.json").is_file()  # written again, whole, by the resumed run
    assert_same_adapter(short_run["dir"], killed)


@pytest.mark.slow
def test_resume_with_other_data_or_settings_is_refused(short_run, tiny_model_dir, sample_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(short_run["dir"], copy)
    from mcqtune.training.checkpoints import ResumeError

    with pytest.raises(ResumeError, match=r"checkpoint-6 was made with another learning_rate"):
        train_sft.run(*train_args(tiny_model_dir, sample_dir / "train.csv", copy, *SHORT, "--resume", "true",
                                   "--learning_rate", 0.5))
    other = tmp_path / "other.csv"
    import pandas as pd

    pd.read_csv(sample_dir / "train.csv", dtype=str).iloc[:-1].to_csv(other, index=False)  # one row less
    result = run_script("train_sft.py", "--config", "demo-cpu.yaml", "--model_name_or_path", tiny_model_dir,
                        "--train_file", other, "--output_dir", copy, *SHORT, "--resume", "true")
    assert result.returncode == 1 and "another train_file" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_bad_data_fails_before_loading_the_model(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("ID,question,option_A,option_B,option_C,option_D,answer\n1,q,a,b,c,d,F\n", encoding="utf-8")
    result = run_script("train_sft.py", "--config", "demo-cpu.yaml", "--train_file", bad,
                        "--model_name_or_path", tmp_path / "no-model-here", "--output_dir", tmp_path / "out")
    assert result.returncode == 1
    assert "bad.csv, line 2, column 'answer'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("argv,message", [
    (["--lora_dropout", "1.5"], "lora_dropout must be in [0, 1)"),
    (["--user_template", "no placeholders"], "user_template lacks the placeholder(s) {question}"),
    (["--model_name_or_path", "./missing-model"], "model path ./missing-model does not exist"),
    (["--no_such_option", "1"], "no_such_option"),
])
def test_bad_options_give_one_clear_message(argv, message, sample_dir, tmp_path):
    result = run_script("train_sft.py", "--config", "demo-cpu.yaml", "--train_file", sample_dir / "train.csv",
                        "--output_dir", tmp_path / "out", *argv)
    assert result.returncode == 1, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr


def test_answer_only_loss_and_gradients_equal_the_plain_loss_under_accumulation(tiny_model_dir, sample_dir):
    """MCQTrainer's loss (output layer only at labelled positions) is the full-vocabulary cross-entropy on the
    answer tokens: same value and same LoRA gradients, summed over 2 accumulated micro-batches of unequal size."""
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mcqtune.model.prompts import encode_training_example
    from mcqtune.data.questions import load_mcq_csv
    from mcqtune.train.trainer import IGNORE_INDEX, answer_only_loss

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                      init_lora_weights=False))
    rows = [encode_training_example(tokenizer, row)
            for _, row in load_mcq_csv(sample_dir / "train.csv").head(4).iterrows()]

    def collate(examples):
        width = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), width), tokenizer.pad_token_id)
        labels = torch.full((len(examples), width), IGNORE_INDEX)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            ids[i, :n] = torch.tensor(e["input_ids"])
            mask[i, :n] = 1
            labels[i, :n] = torch.where(torch.tensor(e["completion_mask"]) == 1, ids[i, :n], IGNORE_INDEX)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    # different sizes and lengths (as batch_rebalance makes them), so padding and row counts differ
    micro_batches = [collate(rows[:1]), collate(rows[1:])]
    items = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro_batches)
    assert items == 8  # the letter and <|im_end|> of each of the 4 questions

    def accumulate(loss_fn):
        model.zero_grad()
        total = 0.0
        for batch in micro_batches:
            loss = loss_fn(batch)
            loss.backward()
            total += float(loss.detach())
        return total, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    def plain(batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum") / items

    ours_loss, ours_grads = accumulate(lambda batch: answer_only_loss(model, batch, num_items_in_batch=items))
    plain_loss, plain_grads = accumulate(plain)
    assert abs(ours_loss - plain_loss) < 1e-5 and ours_loss > 0
    for name, grad in plain_grads.items():
        assert grad.abs().max() > 0, name
        # float32 rounding only (the output layer runs on other shapes): a wrong normalisation is off by factors
        assert torch.allclose(ours_grads[name], grad, atol=1e-5 * float(grad.abs().max()), rtol=1e-4), name


@pytest.mark.parametrize("world,micro,accumulation,expected", [
    (1, 16, 2, (16, 2)), (2, 16, 2, (16, 1)), (4, 16, 2, (8, 1)), (2, 8, 4, (8, 2)), (4, 4, 8, (4, 2)),
])
def test_data_parallel_keeps_the_effective_batch(world, micro, accumulation, expected, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", str(world))
    args = SimpleNamespace(world_size=world, per_device_train_batch_size=micro,
                           gradient_accumulation_steps=accumulation)
    train_sft.scale_for_processes(SimpleNamespace(keep_effective_batch=True), args)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == expected
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps * world == micro * accumulation


def test_padding_free_batches_are_refused_by_the_trainer(tiny_model_dir, sample_dir, tmp_path):
    """The answer-position loss runs padded rows with their attention mask; flattened (padding-free) rows
    would attend to each other silently, so the trainer refuses them however they were switched on."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from mcqtune.model.prompts import encode_training_example
    from mcqtune.data.questions import load_mcq_csv
    from mcqtune.train.trainer import MCQTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [encode_training_example(tokenizer, row)
            for _, row in load_mcq_csv(sample_dir / "train.csv").head(4).iterrows()]
    args = SFTConfig(output_dir=str(tmp_path), report_to="none", max_steps=1)
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)
    with pytest.raises(RuntimeError, match="padding-free batches"):
        MCQTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args,
                   train_dataset=Dataset.from_list(rows), processing_class=tokenizer, data_collator=collator)
    script_args, training_args = train_options.make_parser().parse_args_and_config(
        ["--config", str(config_dir() / "demo-cpu.yaml"), "--train_file", "x.csv"])
    assert training_args.padding_free is False  # stated, so Unsloth's automatic switch never applies
    for option in ("padding_free", "packing"):  # asked for on the command line (a GPU keeps them): refused
        setattr(training_args, option, True)
        with pytest.raises(ConfigError, match="questions would attend to each other"):
            train_options.check_config(script_args, training_args)
        setattr(training_args, option, False)


def test_extra_training_files_join_the_training_rows_only_at_their_weight(tiny_model_dir, sample_dir, tmp_path):
    import pandas as pd

    extra = tmp_path / "public.csv"
    rows = pd.read_csv(sample_dir / "train.csv", dtype=str)
    script_args, training_args = train_args(tiny_model_dir, sample_dir / "train.csv", tmp_path / "out")
    _, val = train_sft.load_splits(script_args, training_args.seed)
    public = pd.concat([rows.head(40).assign(question=lambda f: "公开题" + f["question"]), val.head(5)])
    # 40 new questions and 5 that are validation questions of train_file
    public.assign(ID=[f"pub{i}" for i in range(len(public))]).to_csv(extra, index=False)
    script_args, training_args = train_args(tiny_model_dir, sample_dir / "train.csv", tmp_path / "out",
                                            "--extra_train_files", extra, "--extra_train_weights", 0.5)
    train, val_again = train_sft.load_splits(script_args, training_args.seed)
    assert val_again.equals(val)  # validation comes from train_file alone
    counts = train["source"].value_counts()
    assert counts[str(extra)] == 20 and counts[script_args.train_file] == len(rows) - len(val)
    assert not set(train[train["source"] == str(extra)]["question"]) & set(val["question"])  # no leak


def test_trl_max_length_follows_the_prompt_and_answer_limits_and_a_dropped_row_stops_the_run(tiny_model_dir,
                                                                                             sample_dir, tmp_path):
    from datasets import Dataset

    script_args, training_args = train_args(tiny_model_dir, sample_dir / "train.csv", tmp_path,
                                            "--max_prompt_tokens", 2048)
    train_sft.fit_max_length(script_args, training_args)
    assert training_args.max_length == 2048 + script_args.max_answer_tokens  # TRL's 1024 would cut the answer
    ours = Dataset.from_list([{"input_ids": [1, 2, 3]}, {"input_ids": [1, 2]}])
    kept = SimpleNamespace(train_dataset=Dataset.from_list([{"input_ids": [1, 2, 3]}]), eval_dataset=None)
    with pytest.raises(RuntimeError, match="TRL kept 1 of 2 training rows"):
        train_run.check_nothing_dropped(kept, ours, ours)
    cut = SimpleNamespace(train_dataset=Dataset.from_list([{"input_ids": [1, 2]}, {"input_ids": [1, 2]}]),
                          eval_dataset=None)
    with pytest.raises(RuntimeError, match="cut training rows from 3 to 2 tokens"):
        train_run.check_nothing_dropped(cut, ours, ours)


# ------------------------------------------------------------------------------------ shipped configs, batch order


CONFIGS = sorted((config_dir()).glob("*.yaml"))


def test_the_recipe_defaults_come_from_configs_defaults_yaml(tmp_path):
    import yaml

    defaults = yaml.safe_load((config_dir() / "defaults.yaml").read_text())
    _, training_args = train_options.make_parser().parse_args_and_config(
        ["--train_file", "t.csv", "--model_name_or_path", "m", "--bf16", "false", "--output_dir", str(tmp_path)])
    for key in ("learning_rate", "warmup_steps", "weight_decay", "num_train_epochs", "per_device_train_batch_size",
                "gradient_accumulation_steps", "save_total_limit", "metric_for_best_model", "padding_free"):
        assert getattr(training_args, key) == defaults[key], key


@pytest.mark.parametrize("config", [c for c in CONFIGS if not c.name.startswith(("infer", "defaults"))
                                    and "grpo" not in c.name],
                         ids=lambda c: c.name)
def test_shipped_training_configs_parse_and_pass_the_checks(config, tmp_path):
    script_args, training_args = train_options.make_parser().parse_args_and_config(
        ["--config", str(config), "--output_dir", str(tmp_path)])
    train_options.check_config(script_args, training_args)
    assert training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps == (
        32 if "14b" in config.name else training_args.per_device_train_batch_size)
    assert training_args.padding_free is False


def test_the_4090_recipe_groups_lengths_and_keeps_the_embedding_in_host_memory(tmp_path):
    script_args, training_args = train_options.make_parser().parse_args_and_config(
        ["--config", str(config_dir() / "qwen2.5-14b-4090.yaml"), "--output_dir", str(tmp_path)])
    assert training_args.train_sampling_strategy == "group_by_length"
    assert script_args.offload_embedding is True
    assert train_run.embedding_offload_wanted(script_args, SimpleNamespace(world_size=1)) is True
    assert train_run.embedding_offload_wanted(script_args, SimpleNamespace(world_size=2)) is False
    assert train_run.embedding_offload_wanted(script_args, SimpleNamespace(world_size=1), "hf") is False


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
            model, tokenizer = train_run.load_model(script_args, training_args, train_sft.select_backend("auto"))
        train_ds, val_ds = train_run.build_datasets(tokenizer, train, val, script_args)
        trainer = train_run.build_trainer(model, tokenizer, train_ds, val_ds, val, script_args, training_args)
        shares[order], widths = padding_share(trainer)
        if order == "group_by_length":
            assert widths[0] == max(widths)  # the longest batch first: running out of memory shows at once
    assert shares["group_by_length"] < shares["random"] / 2, shares


@pytest.mark.slow
def test_a_model_trained_on_reasoning_answers_by_reasoning(tiny_model_dir, sample_dir, tmp_path):
    import pandas as pd

    from mcqtune.infer import run as infer
    from mcqtune.runs.provenance import ProvenanceError
    from mcqtune.train import sft as train_sft

    frame = pd.read_csv(sample_dir / "train.csv", dtype=str).head(40)
    frame["explanation"] = [f"逐项比较后，{a}项最符合。" for a in frame["answer"]]
    frame.to_csv(tmp_path / "train.csv", index=False)
    summary = train_sft.run(*train_args(tiny_model_dir, tmp_path / "train.csv", tmp_path / "run",
                                         "--reasoning_column", "explanation", "--max_answer_tokens", 64,
                                         "--max_steps", 2, "--eval_steps", 2, "--save_steps", 2))
    assert summary["best_eval_accuracy"] is None  # validated by eval_loss over the reasoning and the answer
    record = json.loads((tmp_path / "run" / "adapter" / "mcq_provenance.json").read_text())
    assert record["prompt"]["reasoning"] is True
    args = dict(test_file=str(sample_dir / "test.csv"), model_path=str(tmp_path / "run" / "adapter"),
                output_file=str(tmp_path / "s.csv"), batch_size=8)
    with pytest.raises(ProvenanceError, match="trained to reason.*--mode reason"):
        infer.run(infer.InferArguments(**args))
    report = infer.run(infer.InferArguments(**args, mode="reason", max_reasoning_tokens=12))
    assert report["reasoning"]["replies"] == report["rows"]
    with pytest.raises(ConfigError, match="reasoning_column is not supported"):
        train_sft.run(*train_args(tiny_model_dir, tmp_path / "train.csv", tmp_path / "cv", "--folds", 2,
                                   "--reasoning_column", "explanation"))
