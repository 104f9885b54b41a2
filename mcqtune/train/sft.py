"""Fine-tune a chat model on single-choice questions with LoRA; keep the checkpoint with the best accuracy.

    mcq-tune train --config qwen2.5-14b-4090.yaml --train_file train.csv
    python train_sft.py --config demo-cpu.yaml --train_file data/sample/train.csv --output_dir outputs/demo

Every option can come from the YAML file or the command line (the command line wins); `--help` lists them.
The backend (`unsloth`: 4-bit NF4 with Unsloth's fused LoRA kernels; `hf`: plain transformers + peft +
bitsandbytes, the reference recipe) is chosen before trl/transformers are imported. The output directory
ends up holding the LoRA adapter (`adapter/`), optionally merged 16-bit weights (`merged/`), Trainer
checkpoints (`checkpoint-*`, for `--resume`), `training_summary.json` and `training_curves.png`. With
`--folds K` each fold is a run of its own process (folds.py).
"""

from __future__ import annotations

import logging

from mcqtune.model.loading import select_backend
from mcqtune.train.data import load_splits
from mcqtune.training.data import check_validation_rows
from mcqtune.train.folds import train_folds
from mcqtune.train.options import (ScriptArguments, check_config, fit_max_length,
                                   fit_reasoning_validation, scale_for_processes)
from mcqtune.train.run import train_locked

logger = logging.getLogger("train_sft")


def run(script_args: ScriptArguments, training_args, backend: str | None = None) -> dict:
    """Validate, lock the output folder, load, train, export, summarise. Returns training_summary.json's content
    (with --folds, the k-fold driver's summary of all folds)."""
    check_config(script_args, training_args)
    scale_for_processes(script_args, training_args)
    fit_max_length(script_args, training_args)
    fit_reasoning_validation(script_args, training_args)
    backend = select_backend(backend or script_args.backend)
    if script_args.folds > 1:
        return train_folds(script_args, training_args, backend)
    train, val = load_splits(script_args, training_args.seed)
    check_validation_rows(val, training_args, script_args)
    if script_args.distill_from:
        train = with_teachers(script_args, train)
    return train_locked(script_args, training_args, backend, train, val)


def with_teachers(script_args: ScriptArguments, train):
    """The training rows with the teachers' letter probabilities (train/distill.py), checked against the train
    file."""
    from mcqtune.runs.identity import csv_identity
    from mcqtune.train.distill import attach_teacher, load_teachers

    sha = csv_identity(script_args.train_file, script_args.encoding)["bytes_sha256"]
    train, counts = attach_teacher(train, load_teachers(script_args.distill_from, script_args.train_file, sha))
    logger.info("--distill_from: %d training rows with teacher probabilities, %d on their label only",
                counts["distilled_rows"], counts["label_only_rows"])
    return train
