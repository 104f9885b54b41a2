"""The options SFT (train_sft.py) and GRPO (train_grpo.py) share, declared once, and the checks on them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunOptions:
    """Where a training run's questions and model come from, and how it starts."""

    train_file: str = field(default="", metadata={"help": "competition CSV with an answer column"})
    val_file: str | None = field(default=None, metadata={"help": "validation CSV; default: split train_file"})
    val_fraction: float = field(default=0.1, metadata={"help": "share of train_file held out (stratified)"})
    model_name_or_path: str = field(default="", metadata={"help": "local model directory or hub id (the base)"})
    offload_embedding: bool = field(default=False, metadata={
        "help": "keep the input embedding table in host RAM, only looked-up rows go to the GPU (a lower GPU peak, "
                "bench/RESULTS.md; unsloth backend, one training process; not used with several)"})
    max_train_samples: int | None = field(default=None, metadata={"help": "use only the first N training rows"})
    encoding: str | None = field(default=None, metadata={"help": "CSV encoding if not UTF-8 (gb18030, big5)"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir"})


# every option that names a file or folder the run reads
INPUT_OPTIONS = ("model_name_or_path", "train_file", "val_file", "extra_train_files", "adapter", "distill_from",
                 "pseudo_label_from", "pseudo_label_file", "val_test_like", "chat_template")


def input_paths(options) -> list[tuple[str, Path]]:
    """(option, path) of every existing file or folder the run reads (a hub id or an inline template is none)."""
    found = []
    for name in INPUT_OPTIONS:
        value = getattr(options, name, None)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if not item or "{" in str(item):  # a chat template given inline
                continue
            try:
                exists = Path(item).exists()
            except (OSError, ValueError):  # not a path this system can hold (too long, a NUL): not a file read
                continue
            if exists:
                found.append((name, Path(item)))
    return found


def replaced_by_run(path: Path, output_dir: Path) -> str | None:
    """The entry of ``output_dir`` that a fresh training run there moves aside or writes (its outputs,
    checkpoints, k-fold folds) and that holds ``path``; None when there is none."""
    from mcqtune.training.checkpoints import RUN_OUTPUTS

    try:
        first = path.resolve().relative_to(output_dir.resolve()).parts[0]
    except (ValueError, IndexError):
        return None
    return first if first in RUN_OUTPUTS or re.fullmatch(r"(checkpoint|fold)-\d+", first) else None


def output_problems(options: RunOptions, training_args) -> list[str]:
    """Training writes nothing into what it reads: the output folder is neither the model's folder, nor an input
    folder (an --adapter, a teacher's run), nor inside one; and no input lies among the outputs a fresh run there
    moves aside (a GRPO --adapter in the SFT run folder it would write into). Checked before anything moves.
    (Other files in the output folder are kept; ones it would replace are moved aside first:
    checkpoints.set_aside_previous_run.)"""
    from mcqtune.runs.folder import lies_within

    out, model = training_args.output_dir, options.model_name_or_path
    if not out:
        return []
    if model and Path(model).is_dir() and lies_within(out, model):
        return [f"output_dir {out} lies inside the model folder {model}; write elsewhere"]
    problems = []
    for name, path in input_paths(options):
        if path.is_dir() and lies_within(out, path):
            problems.append(f"output_dir {out} lies inside the --{name} {path}, an input; write elsewhere")
        elif replaced_by_run(path, Path(out)):
            problems.append(f"--{name} {path} lies in {Path(out) / replaced_by_run(path, Path(out))}, which a "
                            f"training run in output_dir {out} moves aside or replaces; give another output_dir")
    return problems
