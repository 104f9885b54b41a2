"""The README's and the docs pages' commands stay true: every command line in their ```bash blocks names a script
or subcommand that exists and options that its parser accepts with the values written there (configs read, types
checked), so a renamed or removed option fails here, not on a user's machine. The commands run end to end
elsewhere in the suite on tiny models (the demo, tests/train, tests/answering, tests/export)."""

import re
import shlex

import pytest

from tests.helpers import ROOT

SCRIPTS = ("train_sft.py", "train_grpo.py", "infer.py", "ensemble.py", "export.py", "mcq_dataset.py",
           "answer_parser.py", "demo.py")
SUBCOMMANDS = {"train": "train_sft.py", "grpo": "train_grpo.py", "infer": "infer.py", "ensemble": "ensemble.py",
               "export": "export.py",
               "validate": "mcq_dataset.py", "traces": "traces", "compare": "compare", "shift": "shift",
               "benchmark": "benchmark"}


def split_words(text: str) -> list[str]:
    words = []
    for word in shlex.split(text, comments=True):
        words += split_words(word) if " " in word and ".py" in word else [word]  # bash -c '...'
    return words


def command_lines(text: str):
    """(script, its arguments) for every python / torchrun / accelerate / mcq-tune command in a bash block."""
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = split_words(part)
                for i, word in enumerate(words):
                    if word in SCRIPTS:
                        yield word, words[i + 1:]
                        break
                    if word == "mcq-tune" and i + 1 < len(words) and words[i + 1] in SUBCOMMANDS:
                        leading = ["validate"] if words[i + 1] == "validate" else []  # mcq_dataset.py validate
                        yield SUBCOMMANDS[words[i + 1]], leading + words[i + 2:]
                        break


def parse(script: str, argv: list[str]) -> None:
    """The command's own parsing and the checks that need no files, as the command runs them."""
    if script == "train_sft.py":
        from mcqtune.errors import ConfigError, parse_with
        from mcqtune.train.options import check_requested
        from mcqtune.train.options import make_parser

        check_requested(argv)
        parse_with(make_parser(), argv, ConfigError)
    elif script == "train_grpo.py":
        from mcqtune.errors import ConfigError, parse_with
        from mcqtune.grpo.options import make_parser

        parse_with(make_parser(), argv, ConfigError)
    elif script == "infer.py":
        from mcqtune.infer.options import parse_args

        parse_args(argv)
    elif script == "ensemble.py":
        from mcqtune.ensemble.fuse import parse_args

        parse_args(argv)
    elif script == "export.py":
        from mcqtune.export import exporter

        args = exporter.make_parser().parse_args(argv)
        job = exporter.choose_job(args)
        exporter.refuse_unused_options(args, job)
        exporter.require_inputs(args, job)
    elif script == "traces":
        from mcqtune.infer.traces import parse_args

        parse_args(argv)
    elif script == "benchmark":
        from mcqtune.infer.benchmark import make_parser

        make_parser().parse_args(argv)
    elif script == "shift":
        from mcqtune.reporting.shift import make_parser

        make_parser().parse_args(argv)
    elif script == "compare":
        from mcqtune.reporting.compare import make_parser

        make_parser().parse_args(argv)
    elif script == "mcq_dataset.py":
        from mcqtune.cli.validate import make_parser

        make_parser().parse_args(argv)
    else:
        pytest.fail(f"no parser check for {script}")


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = [command for page in PAGES for command in command_lines(page.read_text(encoding="utf-8"))]
README_LIMIT = 30_000  # characters: the README is the first screen and a map; reference lives in docs/


def test_the_readme_has_the_commands_this_test_reads():
    scripts = {script for script, _ in COMMANDS}
    assert {"train_sft.py", "train_grpo.py", "infer.py", "ensemble.py", "export.py", "mcq_dataset.py", "traces",
            "compare"} <= scripts
    assert len(COMMANDS) >= 20


def test_the_readme_is_a_first_screen_and_its_links_resolve():
    import re

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text) <= README_LIMIT
    head = text[:text.index("## Headline figures")]
    assert "pip install ." in head and "mcq-tune demo" in head and "mcq-tune train" in head \
        and "mcq-tune infer" in head
    for page in PAGES:
        for target in re.findall(r"\]\((?!http|#)([^)#]+)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


@pytest.mark.parametrize("script, argv", COMMANDS, ids=[f"{s} {' '.join(a)[:60]}" for s, a in COMMANDS])
def test_every_readme_command_parses_as_written(script, argv, monkeypatch):
    monkeypatch.chdir(ROOT)  # the README's relative paths (configs/...) are from a checkout
    parse(script, argv)
