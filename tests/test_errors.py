"""cli: how every command ends, run as a user runs it (the real command lines, in subprocesses): bad invocations
and injected faults.

For each: the exit status is non-zero, stderr ends with one line saying what to fix, there is no traceback, no
partial or wrong submission is left, and the normal run that follows succeeds.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import ROOT
from tests.helpers import run_script


def assert_one_line_error(result, *fragments, status=1):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines and lines[-1].startswith("error: "), result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])


@pytest.fixture(scope="module")
def answered(trained_run, tmp_path_factory):
    """A normal CLI run's submission, to compare every recovered run with."""
    out = tmp_path_factory.mktemp("reference")
    result = run_script("infer.py", *infer_argv(trained_run, out / "submission.csv"))
    assert result.returncode == 0, result.stderr[-3000:]
    return (out / "submission.csv").read_bytes()


def infer_argv(trained_run, output_file, *extra, test_file=None):
    return ["--model_path", trained_run["dir"] / "adapter", "--test_file",
            test_file or trained_run["sample_dir"] / "test_no_answer.csv", "--output_file", output_file,
            "--batch_size", 16, *extra]


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ bad invocations


@pytest.mark.slow
@pytest.mark.parametrize("case", ["yaml_syntax", "yaml_unknown_key", "yaml_not_a_mapping", "misspelt_backend",
                                  "template_field", "output_is_test_file", "no_id_column", "missing_config"])
def test_bad_inference_invocations(case, trained_run, tmp_path, answered):
    test_file = tmp_path / "test.csv"
    shutil.copy(trained_run["sample_dir"] / "test_no_answer.csv", test_file)
    original = test_file.read_bytes()
    out = tmp_path / "submission.csv"
    argv, fragments = {
        "yaml_syntax": (["--config", write(tmp_path / "a.yaml", "mode: [score\n")], ["a.yaml", "not valid YAML"]),
        "yaml_unknown_key": (["--config", write(tmp_path / "b.yaml", "modee: score\n")], ["modee"]),
        "yaml_not_a_mapping": (["--config", write(tmp_path / "c.yaml", "- mode\n")], ["c.yaml", "option: value"]),
        "misspelt_backend": (["--backend", "unslothh"], ["--backend must be one of", "unslothh"]),
        "template_field": (["--user_template", "{question} {A} {B} {C} {D} {E}"], ["unknown placeholder", "{E}"]),
        "output_is_test_file": ([], ["would overwrite the input"]),
        "no_id_column": ([], ["has no 'ID' column", "--number_rows true"]),
        "missing_config": (["--config", tmp_path / "nope.yaml"], ["nope.yaml", "no such file"]),
    }[case]
    if case == "output_is_test_file":
        out = test_file
    if case == "no_id_column":
        frame = pd.read_csv(test_file, dtype=str).rename(columns={"ID": "编号"})
        frame.to_csv(test_file, index=False)
        original = test_file.read_bytes()
    result = run_script("infer.py", *infer_argv(trained_run, out, *argv, test_file=test_file))
    assert_one_line_error(result, *fragments)
    assert test_file.read_bytes() == original  # the input is never touched
    assert case == "output_is_test_file" or not out.exists()  # no submission from a failed run
    if case == "no_id_column":  # asked for explicitly, row numbers are fine
        result = run_script("infer.py", *infer_argv(trained_run, out, "--number_rows", "true", test_file=test_file))
        assert result.returncode == 0, result.stderr[-3000:]
        assert list(pd.read_csv(out, dtype=str)["ID"]) == [str(i) for i in range(len(pd.read_csv(test_file)))]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["yaml_syntax", "misspelt_backend", "missing_train_file", "template_field",
                                  "wrong_type"])
def test_bad_training_invocations(case, tiny_model_dir, sample_dir, tmp_path):
    argv, fragments = {
        "yaml_syntax": (["--config", write(tmp_path / "c.yaml", "learning_rate: [1\n")], ["c.yaml", "not valid YAML"]),
        "misspelt_backend": (["--backend", "hff"], ["--backend must be one of"]),
        "missing_train_file": (["--train_file", tmp_path / "absent.csv"], ["absent.csv", "no such file"]),
        "template_field": (["--user_template", "{question} {A} {B} {C} {D} {subject}"], ["{subject}"]),
        "wrong_type": (["--lora_r", "sixteen"], ["--lora_r", "invalid int value"]),
    }[case]
    result = run_script("train_sft.py", "--config", "demo-cpu.yaml", "--model_name_or_path", tiny_model_dir,
                        "--train_file", sample_dir / "train.csv", "--output_dir", tmp_path / "out", *argv)
    assert_one_line_error(result, *fragments)  # argparse's errors too: one line, not a page of usage
    assert not (tmp_path / "out" / "adapter").exists()


@pytest.mark.slow
def test_validate_reports_each_bad_file_in_one_line(tmp_path):
    missing = tmp_path / "missing.csv"
    no_id = write(tmp_path / "no_id.csv", "question,option_A,option_B,option_C,option_D\nq,a,b,c,d\n")
    result = run_script("mcq_dataset.py", "validate", missing, no_id)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 1 and len(errors) == 2 and "Traceback" not in result.stderr
    assert "missing.csv" in errors[0] and "no_id.csv" in errors[1] and "has no 'ID' column" in errors[1]
    assert run_script("mcq_dataset.py", "validate", no_id, "--number-rows").returncode == 0


# ------------------------------------------------------------------------------------------ damaged models


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated_weights", "garbage_weights", "garbage_config", "missing_weights",
                                    "relative_base_from_elsewhere"])
def test_damaged_adapters_are_refused_in_one_line(damage, trained_run, tmp_path, answered):
    adapter = tmp_path / "adapter"
    shutil.copytree(trained_run["dir"] / "adapter", adapter)
    weights, config = adapter / "adapter_model.safetensors", adapter / "adapter_config.json"
    cwd, fragments = ROOT, ["adapter"]
    if damage == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        fragments = ["adapter_model.safetensors", "damaged or was cut short"]
    elif damage == "garbage_weights":
        weights.write_bytes(b"\x00garbage" * 100)
        fragments = ["adapter_model.safetensors", "not a readable safetensors file"]
    elif damage == "garbage_config":
        config.write_text("{not json", encoding="utf-8")
        fragments = ["adapter_config.json"]
    elif damage == "missing_weights":
        weights.unlink()
        fragments = ["no adapter weights", "cut short"]
    else:  # a base recorded relative to the folder training ran in, used from another folder
        shutil.copytree(trained_run["model_dir"], tmp_path / "models" / "tiny-base")
        data = json.loads(config.read_text())
        data["base_model_name_or_path"] = "models/tiny-base"
        config.write_text(json.dumps(data), encoding="utf-8")
        cwd = tmp_path / "adapter"  # neither models/ here nor beside the adapter
        fragments = ["models/tiny-base", "--base_model_id"]
    out = tmp_path / "submission.csv"
    argv = ["--model_path", adapter, "--test_file", trained_run["sample_dir"] / "test_no_answer.csv",
            "--output_file", out, "--batch_size", 16]
    result = run_script("infer.py", *argv, cwd=cwd)
    assert_one_line_error(result, *fragments)
    assert not out.exists()
    if damage == "relative_base_from_elsewhere":  # from the folder training ran in, it is found
        assert run_script("infer.py", *argv, cwd=tmp_path).returncode == 0
        assert out.read_bytes() == answered


# ------------------------------------------------------------------------------------------ faults while running


@pytest.mark.slow
def test_a_full_output_location_fails_in_one_line_and_the_next_run_completes(trained_run, tmp_path, answered):
    out = tmp_path / "submission.csv"
    result = run_script("infer.py", *infer_argv(trained_run, out), limit_file_bytes=4096)  # like a nearly full disk
    assert_one_line_error(result, "File too large")
    assert not out.exists()
    result = run_script("infer.py", *infer_argv(trained_run, out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.read_bytes() == answered


@pytest.mark.slow
def test_a_read_only_output_location_fails_in_one_line(trained_run, tmp_path):
    blocker = write(tmp_path / "not-a-folder", "a file where the run folder should be")
    argv = infer_argv(trained_run, tmp_path / "submission.csv", "--output_dir", blocker / "run")
    result = run_script("infer.py", *argv)
    assert_one_line_error(result, "not-a-folder")
    assert not (tmp_path / "submission.csv").exists()


@pytest.mark.slow
def test_two_runs_on_one_folder_the_second_stops_naming_the_first(trained_run, tmp_path, answered):
    from mcqtune.runs.folder import RunLock

    out = tmp_path / "submission.csv"
    with RunLock(tmp_path / "submission_run"):
        result = run_script("infer.py", *infer_argv(trained_run, out))
    assert_one_line_error(result, "is in use by another run", f"pid {os.getpid()}")
    assert not out.exists()
    assert run_script("infer.py", *infer_argv(trained_run, out)).returncode == 0 and out.read_bytes() == answered


def kill_when_answers_reach(argv, checkpoint: Path, lines: int, timeout: float = 240) -> None:
    process = subprocess.Popen([sys.executable, str(ROOT / "infer.py"), *map(str, argv)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if checkpoint.is_file() and checkpoint.read_bytes().count(b"\n") >= lines:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)


@pytest.mark.slow
def test_kill_9_twice_then_the_same_command_gives_the_uninterrupted_submission(trained_run, tmp_path, answered):
    out = tmp_path / "submission.csv"
    checkpoint = tmp_path / "submission_run" / "predictions.partial.jsonl"
    argv = infer_argv(trained_run, out)
    kill_when_answers_reach(argv, checkpoint, 1 + 16)
    kill_when_answers_reach(argv, checkpoint, 1 + 48)
    with checkpoint.open("ab") as handle:  # and the last record cut in the middle, as a full disk leaves it
        handle.write('{"ID": "x", "raw": "答'.encode()[:-1])
    result = run_script("infer.py", *argv)
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.read_bytes() == answered
    report = json.loads((tmp_path / "submission_run" / "report.json").read_text())
    assert report["damaged_records_set_aside"] == 1 and report["answered_this_run"] < report["rows"]


@pytest.mark.parametrize("yaml_text,expected", [
    ("max_steps: 3.5\n", "max_steps must be a whole number, got 3.5"),
    ("learning_rate: fast\n", "invalid float value: 'fast'"),
    ("no_such_key: 1\n", "unknown option(s) in the --config file: ['--no_such_key', '1']"),
])
def test_bad_yaml_values_are_one_line_before_anything_loads(tmp_path, yaml_text, expected):
    from mcqtune.errors import ConfigError, parse_with
    from mcqtune.train.options import make_parser

    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError) as caught:
        parse_with(make_parser(), ["--config", str(config), "--train_file", "x.csv"], ConfigError)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("template", ["{question}{A!z}{B}{C}{D}", "{question}{A:>{width}}{B}{C}{D}",
                                      "{question}{A:q}{B}{C}{D}"])
def test_a_user_template_that_cannot_be_filled_in_is_named(template):
    from mcqtune.data.questions import PromptOptions, check_prompt_options

    problems = check_prompt_options(PromptOptions(user_template=template))
    assert problems and "user_template" in problems[0]


@pytest.mark.parametrize("argv, expected", [
    (["--temperature", "nan"], "temperature must be a finite number, got nan"),
    (["--rescore_fraction", "inf"], "rescore_fraction must be a finite number, got inf"),
    (["--gpu_memory_gb=-inf"], "gpu_memory_gb must be a finite number, got -inf"),
])
def test_every_float_option_refuses_nan_and_infinity(argv, expected):
    """nan passes every range check (nan < 0 and nan > 0 are both false): one check, for every float option."""
    from mcqtune.infer.options import parse_args
    from mcqtune.errors import ConfigError

    with pytest.raises(ConfigError, match=expected):
        parse_args(["--test_file", "t.csv", "--model_path", "m", *argv])


def test_a_training_learning_rate_of_nan_is_refused(tmp_path):
    from mcqtune.errors import ConfigError, parse_with
    from mcqtune.train.options import make_parser

    with pytest.raises(ConfigError, match="learning_rate must be a finite number, got nan"):
        parse_with(make_parser(), ["--train_file", "x.csv", "--learning_rate", "nan"], ConfigError)


@pytest.mark.parametrize("command, argv, expected", [
    ("train", ["--learning_rate", "-1"], "learning_rate must be > 0, got -1.0"),
    ("train", ["--augment_permutations", "-1"], "augment_permutations must be >= 0, got -1"),
    ("train", ["--early_stopping_patience", "-2"], "early_stopping_patience must be >= 0, got -2"),
    ("train", ["--distill_weight", "-1"], "distill_weight must be > 0, got -1.0"),
    ("grpo", ["--learning_rate", "-1"], "learning_rate must be > 0, got -1.0"),
    ("grpo", ["--beta", "-1"], "beta must be >= 0, got -1.0"),
    ("grpo", ["--top_p", "1.5"], r"top_p must be in \(0, 1\], got 1.5"),
    ("infer", ["--repetition_penalty", "0"], "repetition_penalty must be > 0, got 0.0"),
    ("infer", ["--gpu_memory_gb", "-1"], "gpu_memory_gb must be > 0, got -1.0"),
    ("infer", ["--rescore_fraction", "1.5"], r"rescore_fraction must be in \(0, 1\], got 1.5"),
])
def test_out_of_range_values_are_refused_when_parsed(command, argv, expected):
    """One table of bounds by option name, checked as the options are read: before any folder is touched or any
    model loaded (a library would otherwise fail after loading, with earlier outputs already set aside)."""
    import importlib

    from mcqtune.errors import ConfigError, parse_with

    parser = importlib.import_module(f"mcqtune.{command}.options").make_parser()
    with pytest.raises(ConfigError, match=f"^bad option: {expected}; see --help$"):
        parse_with(parser, ["--test_file", "t.csv", "--model_path", "m", *argv]
                   if command == "infer" else ["--train_file", "x.csv", *argv], ConfigError)


@pytest.mark.parametrize("module, expected", [
    ("unsloth", "pip install 'mcq-tune[unsloth]'"),
    ("llama_cpp.llama", "the optional package 'llama-cpp-python', which is not installed: pip install "
                        "'mcq-tune[export]'"),
    ("lm_eval", "pip install 'mcq-tune[export]'"),
])
def test_a_missing_optional_package_names_its_extra_not_a_bug(module, expected, capsys):
    from mcqtune.errors import EXIT_USER_ERROR, run_cli

    def main(argv):
        raise ModuleNotFoundError(f"No module named '{module}'", name=module)

    assert run_cli(main, []) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert expected in err and "bug" not in err and err.count("\n") == 1


def test_a_missing_required_package_is_still_a_bug_report(capsys):
    from mcqtune.errors import EXIT_BUG, run_cli

    def main(argv):
        raise ModuleNotFoundError("No module named 'pandas'", name="pandas")

    assert run_cli(main, []) == EXIT_BUG
    assert "this is a bug" in capsys.readouterr().err


def test_sigterm_ends_a_command_with_its_closing_line_as_ctrl_c_does(tmp_path):
    """A scheduler's SIGTERM runs the same clean-up as Ctrl-C (locks released, checkpoints kept) and says so."""
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import ROOT

    code = ("import sys, time; from mcqtune.errors import run_cli\n"
            "def main(argv):\n    print('ready', flush=True)\n    time.sleep(60)\n"
            "sys.exit(run_cli(main, []))\n")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 143
    assert err.strip() == "terminated (SIGTERM): what was finished is kept; run the same command again to continue"


def test_a_path_through_a_file_says_so_and_does_not_ask_to_run_again(tmp_path, capsys):
    """`--output_dir afile/sub` where afile is a file: rerunning the same command cannot help, so the line says what
    is wrong with the path instead."""
    from mcqtune import cli

    (tmp_path / "afile").write_text("mine")
    assert cli.main(["sample", str(tmp_path / "afile" / "sub")]) == 1
    err = capsys.readouterr().err
    assert "a part of that path is a file, not a folder: choose another path" in err
    assert "run the same command again" not in err and err.count("\n") == 1
    assert (tmp_path / "afile").read_text() == "mine"


@pytest.mark.parametrize("command", ["train", "grpo"])
def test_an_interrupted_training_says_how_to_continue_by_its_own_options(monkeypatch, capsys, tmp_path, command):
    """A training run without --resume true starts over, so its interrupt line asks for it; with it, the same
    command continues."""
    import importlib

    from mcqtune.errors import EXIT_INTERRUPTED, run_cli

    cli = importlib.import_module(f"mcqtune.cli.{command}")
    job = cli.sft if command == "train" else cli.grpo_run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "run", interrupted)
    argv = ["--train_file", "t.csv", "--model_name_or_path", "m", "--output_dir", str(tmp_path / "o")]
    assert run_cli(cli.main, argv) == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip().endswith("run the same command with --resume true to continue from its "
                                                    "last checkpoint (without it, a run starts over)")
    assert run_cli(cli.main, [*argv, "--resume", "true"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip().endswith("; run the same command again to continue")


def test_a_broken_pipe_that_is_not_stdouts_reader_stays_a_one_line_error(capsys):
    """A child process's pipe breaking is an error, said in one line, even where stdout has no descriptor."""
    from mcqtune.errors import run_cli

    def main(argv):
        raise BrokenPipeError(32, "Broken pipe", "llama child")

    assert run_cli(main, []) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: llama child: Broken pipe; check the path and the disk"]
