"""The `mcq-tune` command: one subcommand per job, each the same command as its script in a checkout.

    mcq-tune train --config qwen2.5-14b-4090.yaml --train_file train.csv      # = python train_sft.py ...
    mcq-tune infer --config infer-14b-4090.yaml --model_path outputs/qwen2.5-14b-lora/adapter --test_file test.csv
    mcq-tune --help                                                           # the subcommands
    mcq-tune train --help                                                     # one subcommand's options

Shipped configs are found by name from any folder (``--config qwen2.5-14b-4090.yaml``). Every subcommand
ends the same way: its result, or one line on stderr and a non-zero exit status (errors.py).
"""

from __future__ import annotations

import importlib
import sys
from typing import NamedTuple, Sequence

from mcqtune import __version__
from mcqtune.errors import EXIT_USER_ERROR, quiet_stdout, run_cli, stdout_reader_gone


class Command(NamedTuple):
    module: str  # mcqtune/cli/<command>.py, whose main(argv) returns the exit status
    help: str


COMMANDS = {
    "train": Command("mcqtune.cli.train", "fine-tune a model with LoRA on a labelled CSV (train_sft.py)"),
    "grpo": Command("mcqtune.cli.grpo", "reinforce a model (or an SFT adapter) with GRPO and a "
                                                        "correctness reward (train_grpo.py)"),
    "infer": Command("mcqtune.cli.infer", "answer a test CSV and write submission.csv (infer.py)"),
    "traces": Command("mcqtune.cli.traces", "reason over the training rows and keep the traces that "
                                                         "reach the label (a training CSV with a reasoning column)"),
    "compare": Command("mcqtune.cli.compare", "runs of one labelled file side by side (direct, "
                                                           "reasoning, cascade): accuracy, cost, fallbacks"),
    "benchmark": Command("mcqtune.cli.benchmark", "accuracy the way published C-Eval / CMMLU figures "
                                                               "are scored (lm-eval's prompt, k-shot, CircularEval)"),
    "shift": Command("mcqtune.cli.shift", "how distinguishable the test questions are from the "
                                                       "training ones, and the most test-like training rows"),
    "ensemble": Command("mcqtune.cli.ensemble", "fuse several runs' letter probabilities (ensemble.py)"),
    "export": Command("mcqtune.cli.export", "merged 16-bit weights, GGUF, a clean adapter, an lm-eval "
                                                        "task (export.py)"),
    "validate": Command("mcqtune.cli.validate", "check competition CSVs and summarise them "
                                                        "(mcq_dataset.py validate)"),
    "parse": Command("mcqtune.cli.parse", "read the answer letter from a model reply "
                                                        "(answer_parser.py)"),
    "template": Command("mcqtune.cli.template", "where a model's chat template puts the answer "
                                                             "letter"),
    "sample": Command("mcqtune.cli.sample", "write the project's sample questions (or the hard testbed)"),
    "tiny": Command("mcqtune.cli.tiny", "write a tiny random model with the real Qwen2.5 tokenizer"),
    "demo": Command("mcqtune.cli.demo", "train and answer with a tiny model on the CPU, before and after"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: mcq-tune <command> [options]   (mcq-tune {__version__})", "", "commands:"]
    lines += [f"  {name:<{width}}  {command.help}" for name, command in COMMANDS.items()]
    lines += ["", "mcq-tune <command> --help lists a command's options; shipped configs: --config NAME.yaml"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        status = dispatch(list(sys.argv[1:] if argv is None else argv), console=argv is None)
        sys.stdout.flush()  # a buffered stdout meets a reader that left here, not at exit
        return status
    except BrokenPipeError:
        if not stdout_reader_gone():  # another pipe broke: not this case
            raise
        return quiet_stdout()


def dispatch(argv: list[str], console: bool = False) -> int:
    """Run the subcommand ``argv`` names; ``console``: called as the `mcq-tune` command (not from a script, whose
    usage line keeps the script's name)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else EXIT_USER_ERROR
    if argv[0] in ("-V", "--version"):
        print(f"mcq-tune {__version__}")
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"error: unknown command '{argv[0]}'; one of: {', '.join(COMMANDS)} (mcq-tune --help)", file=sys.stderr)
        return EXIT_USER_ERROR
    function = importlib.import_module(command.module).main
    program = sys.argv[0]
    if console:
        sys.argv[0] = f"mcq-tune {argv[0]}"  # argparse names the program from it: "usage: mcq-tune infer ..."
    try:
        return run_cli(function, argv[1:])
    finally:
        sys.argv[0] = program

