"""The options SFT (train_sft.py) and GRPO (train_grpo.py) share, declared once, and the checks on them."""

from __future__ import annotations

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


def output_problems(options: RunOptions, training_args) -> list[str]:
    """Training writes nothing into what it reads: the output folder is neither the model's folder nor inside it.
    (Files it would replace in the output folder are moved aside first: checkpoints.set_aside_previous_run.)"""
    from mcqtune.runs.folder import lies_within

    out, model = training_args.output_dir, options.model_name_or_path
    if out and model and Path(model).is_dir() and lies_within(out, model):
        return [f"output_dir {out} lies inside the model folder {model}; write elsewhere"]
    return []
