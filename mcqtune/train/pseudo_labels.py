"""Pseudo-labels (``train_sft.py --pseudo_label_from RUN... --pseudo_label_file test.csv``): the test questions
that a run -- better, several runs averaged, an ensemble by the mean -- answered with at least
``--pseudo_label_threshold`` probability join the training rows with that letter.

Each run must carry the record of what it answered (its ``report.json``), and that must be the given file's
bytes. The pseudo-labelled rows are training rows only: validation stays on labelled data. Their IDs are the
test file's behind ``pseudo-labels:`` (test and training IDs are often both 0..N-1: the same ID is not the same
question); a test question that is also a validation or training question (as data/overlap.py tells questions
apart) is left out and counted (it would leak, or its letter could contradict the label), and a file whose every
question is a labelled one is refused (a labelled file given where the test file belongs).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mcqtune.data.overlap import question_keys
from mcqtune.data.questions import ANSWER_COLUMN, LETTERS, OPTION_COLUMNS, load_mcq_csv
from mcqtune.errors import DataError
from mcqtune.train.distill import load_teachers

logger = logging.getLogger("train_sft")
PSEUDO_SOURCE = "pseudo-labels"


def pseudo_labelled_rows(script_args, train: pd.DataFrame, val: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The confident test rows with their letters, and what training_summary.json records of them."""
    from mcqtune.runs.identity import csv_identity

    test_file, threshold = script_args.pseudo_label_file, script_args.pseudo_label_threshold
    test = load_mcq_csv(test_file, encoding=script_args.encoding)
    validating, training = (set(question_keys(frame, OPTION_COLUMNS)) for frame in (val, train))
    keys = dict(zip(test["ID"], question_keys(test, OPTION_COLUMNS)))
    if all(key in validating or key in training for key in keys.values()):
        raise DataError(test_file, f"every one of its {len(test)} questions is a training or validation question: "
                                   "give the test file the runs answered, not a labelled one")
    probs = load_teachers(script_args.pseudo_label_from, test_file,
                          csv_identity(test_file, script_args.encoding)["bytes_sha256"],
                          consumer="--pseudo_label_from", scored_by_all=True)
    if not probs:
        raise DataError(test_file, "the --pseudo_label_from runs share no scored row of it (score mode gives the "
                                   "letter probabilities pseudo-labels need)")
    scored = test[test["ID"].isin(probs)]
    best = np.array([probs[id_] for id_ in scored["ID"]]).reshape(-1, len(LETTERS))
    # a labelled question stays out: in validation it would leak, in training its letter could contradict the label
    in_val = np.array([keys[id_] in validating for id_ in scored["ID"]], dtype=bool)
    in_train = np.array([keys[id_] in training for id_ in scored["ID"]], dtype=bool) & ~in_val
    keep = (best.max(axis=1) >= threshold) & ~in_val & ~in_train
    rows = scored[keep].assign(**{ANSWER_COLUMN: [LETTERS[i] for i in best[keep].argmax(axis=1)],
                                  "source": PSEUDO_SOURCE})
    rows = rows.assign(ID=PSEUDO_SOURCE + ":" + rows["ID"])
    letters = rows[ANSWER_COLUMN].value_counts()
    summary = {"file": test_file, "threshold": threshold,  # the runs by content are in run_identity
               "runs": [str(Path(r).resolve()) for r in script_args.pseudo_label_from],
               "test_rows": len(test), "scored_rows": len(scored), "rows": len(rows),
               "left_out_as_labelled": {"validation": int(in_val.sum()), "training": int(in_train.sum())},
               "letters": {x: int(letters.get(x, 0)) for x in LETTERS}}
    logger.info("--pseudo_label_from: %d of %d test questions at probability >= %g join training (A-D: %s)",
                len(rows), len(test), threshold, ", ".join(str(summary["letters"][x]) for x in LETTERS))
    if in_val.any() or in_train.any():
        logger.warning("--pseudo_label_from: %d test questions are also validation questions and %d training "
                       "questions; left out", int(in_val.sum()), int(in_train.sum()))
    return rows, summary


def add_pseudo_labels(train: pd.DataFrame, val: pd.DataFrame, script_args) -> tuple[pd.DataFrame, dict | None]:
    """``train`` with the pseudo-labelled test rows after it (validation untouched)."""
    if not script_args.pseudo_label_from:
        return train, None
    rows, summary = pseudo_labelled_rows(script_args, train, val)
    if not len(rows):
        logger.warning("--pseudo_label_from: no test question reaches probability %g; training on the labelled "
                       "rows only", script_args.pseudo_label_threshold)
    base = train if "source" in train else train.assign(source=script_args.train_file)
    merged = pd.concat([base, rows[[c for c in rows if c in base or c == "source"]]], ignore_index=True)
    # every source a category, so that the training summary's by_source counts a source with no row as 0
    merged["source"] = pd.Categorical(merged["source"], categories=list(dict.fromkeys([*base["source"],
                                                                                       PSEUDO_SOURCE])))
    return merged, summary
