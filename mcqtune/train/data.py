"""Training rows: the competition file split (or a fold), extra sources added apart, tokenised for TRL.

train_sft.py and train/folds.py call these; the prompt and the answer tokens come from prompts.py.
"""

from __future__ import annotations

import logging
import math

import pandas as pd

from mcqtune.model.prompts import PromptTooLong
from mcqtune.model.prompts import ReplyTooLong, encode_training_example
from mcqtune.data.overlap import question_keys
from mcqtune.data.questions import ANSWER_COLUMN, LETTERS, OPTION_COLUMNS, REASONING_COLUMN, describe, load_mcq_csv
from mcqtune.errors import DataError
from mcqtune.data.option_orders import augment_with_permutations
from mcqtune.train.distill import TEACHER_COLUMN
from mcqtune.train.pseudo_labels import PSEUDO_SOURCE, add_pseudo_labels
from mcqtune.training.data import check_held_out, split_train_val

logger = logging.getLogger("train_sft")


def load_training_file(script_args, path: str | None = None):
    """A validated labelled file (train_file unless ``path``; DataError names the file, line and column on
    failure), with its reasoning column when the run trains reasoning replies."""
    path = path or script_args.train_file
    frame = load_mcq_csv(path, require_answer=True, encoding=script_args.encoding, number_rows=True)
    return with_reasoning(frame, script_args.reasoning_column, path) if script_args.reasoning else frame


def with_reasoning(frame: pd.DataFrame, column: str, path: str) -> pd.DataFrame:
    """The frame with ``column``'s text as its reasoning; every row must have some (a row without would train
    another reply form)."""
    if column not in frame:
        raise DataError(path, f"no column '{column}' (reasoning_column); columns: {', '.join(frame.columns)}")
    empty = frame[column].fillna("").astype(str).str.strip() == ""
    if empty.any():
        first = int(empty.to_numpy().argmax())
        raise DataError(path, f"{int(empty.sum())} rows have no text in '{column}' (first: ID "
                              f"{frame['ID'].iloc[first]}); every row trained on reasoning needs its reasoning")
    return frame.assign(**{REASONING_COLUMN: frame[column].astype(str)})


def load_splits(script_args, seed: int, frame=None, val=None):
    """Train and validation frames: ``val`` as given (a fold), else val_file, else a stratified split."""
    frame = load_training_file(script_args) if frame is None else frame
    if val is not None:
        train = frame
    elif script_args.val_file:
        train, val = frame, load_training_file(script_args, script_args.val_file)
        check_held_out(train, val, script_args.val_file)
    elif script_args.val_test_like:
        from mcqtune.reporting.shift import load_likeness, split_test_like

        likeness = load_likeness(script_args.val_test_like, script_args.train_file, script_args.encoding)
        train, val = split_test_like(frame, likeness, script_args.val_fraction)
        logger.info("validation: the %d most test-like rows (--val_test_like)", len(val))
    else:
        train, val = split_train_val(frame, script_args.val_fraction, seed)
    if script_args.max_train_samples:
        train = train.head(script_args.max_train_samples)
    train = add_extra_sources(train, val, script_args, seed)
    train, _ = add_pseudo_labels(train, val, script_args)
    if script_args.augment_permutations:
        train = augment_with_permutations(train, script_args.augment_permutations, seed)
    logger.info("train: %s", describe(train))
    logger.info("validation: %s", describe(val))
    return train, val


def add_extra_sources(train, val, script_args, seed: int):
    """train_file's training rows plus each extra file's rows at its weight, with a ``source`` column; questions
    that also appear in the validation rows (as data/overlap.py tells questions apart) are dropped from the extra
    rows (they would leak), and counted."""
    if not script_args.extra_train_files:
        return train
    validating, training = (set(question_keys(frame, OPTION_COLUMNS)) for frame in (val, train))
    parts = [train.assign(source=script_args.train_file)]
    for number, path in enumerate(script_args.extra_train_files):
        weight = script_args.extra_train_weights[number] if number < len(script_args.extra_train_weights) else 1.0
        extra = load_training_file(script_args, path)
        keys = question_keys(extra, OPTION_COLUMNS)
        leaking = pd.Series([key in validating for key in keys], index=extra.index)
        repeated = pd.Series([key in training for key in keys], index=extra.index)
        logger.info("%s: %d rows, weight %g; %d of its questions are also in train_file's training rows; %d in the "
                    "validation rows are left out", path, len(extra), weight, int(repeated.sum()), int(leaking.sum()))
        extra = sample_rows(extra[~leaking], weight, seed + number)
        parts.append(extra.assign(ID=[f"{path}#{i}" for i in extra["ID"]], source=path))
    return pd.concat(parts, ignore_index=True)


def sample_rows(frame: pd.DataFrame, weight: float, seed: int = 42) -> pd.DataFrame:
    """``weight`` x the rows: every row int(weight) times, plus a seeded sample for the fractional part."""
    whole, part = int(weight), weight - int(weight)
    copies = [frame] * whole + ([frame.sample(n=int(round(part * len(frame))), random_state=seed)] if part else [])
    return pd.concat(copies, ignore_index=True) if copies else frame.iloc[:0]


def build_datasets(tokenizer, train, val, script_args, counts: dict | None = None):
    """Pre-tokenised datasets (input_ids + completion_mask): TRL builds answer-only labels from the mask.
    ``counts`` (if given) receives how many rows had their question shortened or their answer cut, per split."""
    from datasets import Dataset

    def encode(frame, split):
        rows, too_long, replies_too_long = [], [], []
        for _, row in frame.iterrows():
            try:
                rows.append(encode_training_example(tokenizer, row, script_args.prompt_style,
                                                    script_args.max_prompt_tokens, script_args.max_answer_tokens))
                if TEACHER_COLUMN in frame:
                    rows[-1][TEACHER_COLUMN] = list(row[TEACHER_COLUMN])
            except PromptTooLong as err:  # refused together: the limit that fits them all
                too_long += err.needed
            except ReplyTooLong as err:
                replies_too_long += err.needed
        if too_long:
            raise PromptTooLong(too_long, script_args.max_prompt_tokens)
        if replies_too_long:
            raise ReplyTooLong(replies_too_long, script_args.max_answer_tokens)
        shortened, cut = sum(r.pop("question_shortened") for r in rows), sum(r.pop("answer_cut") for r in rows)
        if counts is not None:
            counts[split] = {"rows": len(rows), "question_shortened": shortened, "answer_cut": cut,
                             "mean_tokens": round(sum(len(r["input_ids"]) for r in rows) / max(len(rows), 1), 1)}
            if TEACHER_COLUMN in frame:
                counts[split]["distilled_rows"] = sum(not math.isnan(r[TEACHER_COLUMN][0]) for r in rows)
            if "source" in frame:
                counts[split]["by_source"] = {str(k): int(v) for k, v in frame["source"].value_counts().items()}
                pseudo = frame.loc[frame["source"] == PSEUDO_SOURCE, ANSWER_COLUMN].value_counts()
                if len(pseudo):
                    counts[split]["pseudo_label_letters"] = {x: int(pseudo.get(x, 0)) for x in LETTERS}
        if shortened:
            logger.warning("%s: %d of %d questions were longer than max_prompt_tokens %d and were shortened (the "
                           "options are kept)", split, shortened, len(rows), script_args.max_prompt_tokens)
        if cut:
            logger.warning("%s: %d answers were cut at max_answer_tokens %d", split, cut, script_args.max_answer_tokens)
        return Dataset.from_list(rows)

    return encode(train, "train"), encode(val, "validation")


def check_nothing_dropped(trainer, train_ds, val_ds) -> None:
    """TRL filters and truncates datasets on its own; a row lost there would be trained on silently less."""
    kept = len(trainer.train_dataset)
    if kept != len(train_ds):
        raise RuntimeError(f"TRL kept {kept} of {len(train_ds)} training rows; nothing may be dropped silently")
    if trainer.eval_dataset is not None and len(trainer.eval_dataset) != len(val_ds):
        raise RuntimeError(f"TRL kept {len(trainer.eval_dataset)} of {len(val_ds)} validation rows")
    longest = max(len(ids) for ids in trainer.train_dataset["input_ids"])
    original = max(len(ids) for ids in train_ds["input_ids"])
    if longest != original:
        raise RuntimeError(f"TRL cut training rows from {original} to {longest} tokens")
