"""Distillation from a stronger model's answers (``train_sft.py --distill_from``): its letter probabilities for the
training rows, checked to be of this very train file, averaged over several teachers.

A teacher is an ``infer.py`` run on the training file (its folder or ``predictions.csv``), a k-fold run's
out-of-fold predictions (its folder or ``oof_predictions.csv``), or several of them (averaged). Each must carry
the record of what it answered (``report.json`` / ``cv_summary.json``) and that must be the training file's
bytes: IDs of another file need not be the same questions. Rows a teacher gave no probabilities (a reasoned or
generated answer) or did not answer are trained on their label only, and counted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mcqtune.errors import DataError
from mcqtune.runs.predictions import PROB_COLUMNS
from mcqtune.runs.provenance import check_answered, predictions_file

logger = logging.getLogger("train_sft")
TEACHER_COLUMN = "teacher_probs"


def read_teacher(path: Path) -> dict[str, np.ndarray]:
    """ID -> the four letter probabilities, for the rows that have them."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("ID", *PROB_COLUMNS) if c not in frame]
    if missing:
        raise DataError(str(path), f"no {', '.join(missing)} column(s): a teacher needs letter probabilities "
                                   "(infer.py in score mode)")
    cells = frame[list(PROB_COLUMNS)]
    probs = cells.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    unreadable = np.isnan(probs) & (cells.apply(lambda c: c.str.strip()).to_numpy() != "")
    if unreadable.any():
        row = int(unreadable.any(axis=1).argmax())
        raise DataError(str(path), f"ID {frame['ID'].iloc[row]}: a letter probability that is not a number "
                                   f"({cells.iloc[row].tolist()}); an empty cell means no probabilities")
    usable = ~np.isnan(probs).any(axis=1)
    bad = usable & ((probs < 0).any(axis=1) | (np.abs(probs.sum(axis=1) - 1) > 1e-3))
    if bad.any():
        raise DataError(str(path), f"{int(bad.sum())} rows have probabilities that are negative or do not sum to 1 "
                                   f"(first ID {frame['ID'][bad].iloc[0]})")
    return {id_: p / p.sum() for id_, p, ok in zip(frame["ID"], probs, usable) if ok}


def load_teachers(sources: Sequence[str], train_file: str, train_sha: str, consumer: str = "--distill_from",
                  scored_by_all: bool = False) -> dict[str, np.ndarray]:
    """Every source's letter probabilities, each source checked to have answered ``train_file`` (the file whose
    bytes hash to ``train_sha``); averaged per ID over the sources that scored it (``scored_by_all``: only IDs every
    source scored)."""
    found: dict[str, list[np.ndarray]] = {}
    for source in sources:
        path = predictions_file(source, consumer)
        check_answered(path, train_sha, consumer=consumer, test_name=train_file)
        for id_, probs in read_teacher(path).items():
            found.setdefault(id_, []).append(probs)
    return {id_: np.mean(values, axis=0) for id_, values in found.items()
            if not scored_by_all or len(values) == len(sources)}


def attach_teacher(frame: pd.DataFrame, teacher: dict[str, np.ndarray]) -> tuple[pd.DataFrame, dict]:
    """The training rows with their teacher probabilities (NaN where none: trained on the label only) and the
    counts for training_summary.json."""
    probs = [teacher.get(str(id_)) for id_ in frame["ID"]]
    with_teacher = sum(p is not None for p in probs)
    counts = {"distilled_rows": with_teacher, "label_only_rows": len(frame) - with_teacher}
    if not with_teacher:
        raise DataError("--distill_from", "the teachers answered none of the training rows (by ID)")
    if counts["label_only_rows"]:
        logger.warning("--distill_from: %d of %d training rows have no teacher probabilities and are trained on "
                       "their label only", counts["label_only_rows"], len(frame))
    column = [list(map(float, p)) if p is not None else [float("nan")] * 4 for p in probs]
    return frame.assign(**{TEACHER_COLUMN: column}), counts
