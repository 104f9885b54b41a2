"""The `mcq-tune` command: its subcommands are the scripts' commands, it works from any folder (configs are
package data), and a wrong subcommand is one line with a non-zero status."""

import shutil
import subprocess
import sys

import pytest

from mcqtune import cli
from mcqtune.config_files import config_dir, resolve_config, resolve_config_argv, shipped_configs
from mcqtune.errors import EXIT_READER_GONE
from tests.helpers import ROOT


def command(*argv, cwd):
    """The installed console script when it is on PATH, else ``python -m mcqtune`` (the same entry point)."""
    exe = shutil.which("mcq-tune")
    prefix = [exe] if exe else [sys.executable, "-m", "mcqtune"]
    return subprocess.run([*prefix, *map(str, argv)], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_from_another_folder_lists_every_job(tmp_path):
    result = command("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("train", "infer", "ensemble", "export", "validate", "parse", "template", "sample", "tiny", "demo"):
        assert f"\n  {name} " in result.stdout


def test_a_subcommands_usage_line_names_it(tmp_path):
    for name in ("infer", "train", "tiny"):
        result = command(name, "--help", cwd=tmp_path)
        assert result.returncode == 0 and result.stdout.startswith(f"usage: mcq-tune {name} "), result.stdout[:200]


def test_output_into_a_reader_that_stopped_early_ends_without_a_traceback(tmp_path):
    """`mcq-tune --help | head -1`, `mcq-tune validate big.csv | head -1`: here the reader has gone before the
    output is written; the subcommand's own error handling must not call it an error of the user's files."""
    import os

    exe = shutil.which("mcq-tune")
    csv = tmp_path / "t.csv"
    csv.write_text("ID,question,option_A,option_B,option_C,option_D\n" +
                   "".join(f"{i},问题{i},a,b,c,d\n" for i in range(3)), encoding="utf-8")
    read, write = os.pipe()
    os.close(read)
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # as a user's shell has it
    with open(write, "wb") as stdout:
        for env in (buffered, {**buffered, "PYTHONUNBUFFERED": "1"}):
            for argv in (["--help"], ["validate", str(csv), str(csv)]):
                result = subprocess.run([*([exe] if exe else [sys.executable, "-m", "mcqtune"]), *argv],
                                        stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=300,
                                        env=env)
                assert result.returncode == EXIT_READER_GONE and result.stderr == "", (argv, result.stderr)


def test_an_unknown_or_missing_subcommand_is_one_line(tmp_path, capsys):
    assert cli.main(["trian"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown command 'trian'") and "\n" not in err
    assert cli.main([]) == 1


def test_subcommands_equal_the_scripts(sample_dir, tmp_path):
    """The same arguments through the command and through the root script give the same output."""
    csv = sample_dir / "train.csv"
    via_command = command("validate", csv, "--require-answer", cwd=tmp_path)
    via_script = subprocess.run([sys.executable, str(ROOT / "mcq_dataset.py"), "validate", str(csv),
                                 "--require-answer"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert via_command.returncode == via_script.returncode == 0
    assert via_command.stdout == via_script.stdout and "OK" in via_command.stdout
    reply = "经过分析，正确答案是（Ｃ）。"
    parsed = command("parse", reply, cwd=tmp_path)
    assert parsed.returncode == 0 and parsed.stdout.startswith("C")
    script = subprocess.run([sys.executable, str(ROOT / "answer_parser.py"), reply], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert script.stdout == parsed.stdout


@pytest.mark.slow
def test_train_help_from_another_folder_names_the_options(tmp_path):
    result = command("train", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--train_file" in result.stdout and "--folds" in result.stdout


def test_shipped_configs_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "qwen2.5-14b-4090.yaml" in shipped_configs() and "demo-cpu.yaml" in shipped_configs()
    shipped = str(config_dir() / "demo-cpu.yaml")
    assert resolve_config("demo-cpu.yaml") == resolve_config("demo-cpu") == shipped
    assert resolve_config("configs/demo-cpu.yaml") == shipped  # the README's spelling in a checkout
    mine = tmp_path / "demo-cpu.yaml"
    mine.write_text("learning_rate: 0.1\n")
    assert resolve_config("demo-cpu.yaml") == "demo-cpu.yaml"  # a file of the user's own wins
    assert resolve_config("elsewhere/missing.yaml") == "elsewhere/missing.yaml"  # left for the parser to name
    assert resolve_config_argv(["--config=demo-cpu", "--x", "1"]) == [f"--config={shipped}", "--x", "1"]


def test_every_option_of_every_command_says_what_it_does(monkeypatch):
    """`mcq-tune <command> --help` explains each option (transformers' and TRL's own options come with theirs)."""
    import argparse

    class Parsed(Exception):
        pass

    seen, parse = [], argparse.ArgumentParser.parse_known_args

    def capture(parser, args=None, namespace=None):
        if not parser.add_help:  # the backend's quiet first look at the command line
            return parse(parser, args, namespace)
        seen.append(parser)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    unexplained = {}
    for name, command in cli.COMMANDS.items():
        seen.clear()
        try:
            __import__(command.module, fromlist=["main"]).main(["--help"])
        except Parsed:
            pass
        parsers = seen
        assert parsers, name
        unexplained.update({f"{name} {action.option_strings[0] if action.option_strings else action.dest}": 1
                            for action in parsers[-1]._actions
                            if not isinstance(action, argparse._HelpAction) and not action.help})
        assert parsers[-1].description or name in ("train", "grpo", "infer", "traces", "template"), name
    assert not unexplained, sorted(unexplained)
