"""The validation split that SFT and GRPO share: stratified by answer letter, and refused before any model loads
when a validating run would have no validation row, or a validation file holds nothing but training questions."""

from __future__ import annotations

import logging

import pandas as pd

from mcqtune.data.overlap import overlap
from mcqtune.data.questions import ANSWER_COLUMN, OPTION_COLUMNS
from mcqtune.errors import DataError

logger = logging.getLogger(__name__)


def split_train_val(frame: pd.DataFrame, val_fraction: float = 0.1,
                    seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified by answer letter and seeded: every letter keeps its share in both parts."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    val_parts = []
    for _, group in frame.groupby(ANSWER_COLUMN, sort=True):
        n_val = int(round(len(group) * val_fraction))
        val_parts.append(group.sample(n=n_val, random_state=seed))
    val = pd.concat(val_parts).sort_index()
    train = frame.drop(index=val.index)
    return train.reset_index(drop=True), val.reset_index(drop=True)


def check_validation_rows(val: pd.DataFrame, training_args, script_args) -> None:
    """Refused before any model loads: a run that validates (evaluation on, or the best checkpoint kept) with no
    validation row would train and then fail when it looks for its validation accuracy."""
    validates = str(getattr(training_args, "eval_strategy", "no")) not in ("no", "IntervalStrategy.NO") \
        or getattr(training_args, "load_best_model_at_end", False)
    if len(val) or not validates:
        return
    source = script_args.val_file or script_args.train_file
    raise DataError(source, f"leaves no validation rows (--val_fraction {script_args.val_fraction} of each answer "
                            "letter's rows rounds to none), but the run validates and keeps its best checkpoint by "
                            "validation accuracy: give more rows or a --val_file, raise --val_fraction, or pass "
                            "--eval_strategy no --load_best_model_at_end false")


def check_held_out(train: pd.DataFrame, val: pd.DataFrame, val_file: str) -> None:
    """A validation file whose every question the training file also holds (the same file, or a copy) would choose
    the best checkpoint on training data: refused. Some shared questions are counted in the log."""
    shared = overlap(train, val, OPTION_COLUMNS)
    if shared["normalised"] == len(val):
        raise DataError(val_file, f"every one of its {len(val)} questions also stands in the training file (the same "
                                  "file?): the best checkpoint would be chosen on questions it trained on; give a "
                                  "held-out --val_file, or leave it out to split one off (--val_fraction)")
    if shared["normalised"]:
        logger.warning("--val_file: %d of its %d questions also stand in the training file (%d exactly): validation "
                       "accuracy on them overstates what held-out questions get (first: validation ID %s = training "
                       "ID %s)", shared["normalised"], len(val), shared["exact"], shared["pairs"][0]["test_ID"],
                       shared["pairs"][0]["train_ID"])
