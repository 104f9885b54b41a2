"""How distinguishable the test questions are from the training ones, and which training rows look most like the
test (``mcq-tune shift``).

    mcq-tune shift --train_file train.csv --test_file test.csv              # -> test_shift/ beside test.csv

A classifier on character n-grams (1-3, TF-IDF; logistic regression) learns to tell a test question from a
training one; its cross-validated ROC AUC says how well it can. Near 0.5 the two files are drawn alike and a random
validation split is a fair proxy for the leaderboard; the higher it is, the more a random split flatters, and
validating on the training rows that look most like the test is the better judge (``train_sft.py
--val_test_like test_shift/train_test_likeness.csv``). Writes ``shift_report.json``, ``shift_report.md`` (the
reading in plain words, the most test-like training rows) and ``train_test_likeness.csv`` (every training row's
out-of-fold probability of being a test question).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mcqtune.data.overlap import describe_overlap
from mcqtune.data.questions import LETTERS
from mcqtune.reporting.compare import refuse_usage
from mcqtune.errors import DataError

logger = logging.getLogger("shift")
LIKENESS_FILE = "train_test_likeness.csv"
REPORT_FILE = "shift_report.json"
READINGS = (  # (AUC below, what it means for a random validation split)
    (0.5, "the test questions cannot be told from the training ones: a random validation split is a fair proxy for "
          "the leaderboard (an AUC below 0.5 is no more than chance's noise, or the same questions on both sides, "
          "which cross-validation then learns backwards: the overlap below says which)"),
    (0.6, "the test questions are hard to tell from the training ones: a random validation split is a fair proxy "
          "for the leaderboard"),
    (0.75, "the test questions differ somewhat from the training ones: a random validation split may flatter; "
           "validate on the most test-like training rows as well (train_sft.py --val_test_like)"),
    (1.01, "the test questions are clearly unlike the training ones: a random validation split will overstate the "
           "leaderboard; validate on the most test-like training rows (train_sft.py --val_test_like) and read even "
           "that as optimistic"),
)


def question_texts(frame: pd.DataFrame) -> list[str]:
    """What the classifier reads of a row: the question and its four options."""
    columns = ["question", *(f"option_{x}" for x in LETTERS)]
    return frame[columns].fillna("").astype(str).agg("\n".join, axis=1).tolist()


def test_likeness(train: pd.DataFrame, test: pd.DataFrame, folds: int = 5, seed: int = 0) -> tuple[float, np.ndarray]:
    """The cross-validated ROC AUC of telling test rows from training rows, and each training row's out-of-fold
    probability of being a test row."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    texts = question_texts(train) + question_texts(test)
    is_test = np.r_[np.zeros(len(train)), np.ones(len(test))]
    features = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True,
                               max_features=200_000).fit_transform(texts)
    classifier = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced")
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probs = cross_val_predict(classifier, features, is_test, cv=splits, method="predict_proba")[:, 1]
    return float(roc_auc_score(is_test, probs)), probs[:len(train)]


def reading(auc: float) -> str:
    return next(text for below, text in READINGS if auc < below)


def write_report(out_dir: Path, train_file: str, test_file: str, train: pd.DataFrame, auc: float,
                 likeness: np.ndarray, top: int, shared: dict) -> dict:
    from mcqtune.files import write_atomic, write_csv_atomic, write_json_atomic
    from mcqtune.runs.identity import csv_identity

    ranked = train.assign(test_likeness=np.round(likeness, 6)).sort_values("test_likeness", ascending=False,
                                                                            kind="stable")
    write_csv_atomic(ranked[["ID", "test_likeness"]], out_dir / LIKENESS_FILE)
    report = {"train_file": train_file, "train_file_sha256": csv_identity(train_file, None)["bytes_sha256"],
              "test_file": test_file, "train_rows": len(train), "auc": round(auc, 4), "reading": reading(auc),
              "overlap": shared,
              "most_test_like": [{"ID": r.ID, "test_likeness": r.test_likeness, "question": str(r.question)[:80]}
                                 for r in ranked.head(top).itertuples()]}
    write_json_atomic(report, out_dir / REPORT_FILE)
    lines = [f"# How {Path(test_file).name} differs from {Path(train_file).name}", "",
             f"Cross-validated ROC AUC of telling a test question from a training one: **{auc:.3f}** "
             "(0.5: indistinguishable; 1.0: always told apart).", "", f"Reading: {reading(auc)}.", "",
             f"Overlap: {describe_overlap(shared)}.", ""]
    if shared["pairs"]:
        lines += ["| test ID | training ID | match |", "|---|---|---|"]
        lines += [f"| {p['test_ID']} | {p['train_ID']} | {p['match']} |" for p in shared["pairs"]] + [""]
    lines += [f"The {top} most test-like training rows (out-of-fold probability of being a test question):", "",
              "| ID | test-likeness | question |", "|---|---|---|"]
    lines += [f"| {r['ID']} | {r['test_likeness']:.3f} | {r['question'].replace('|', '/')} |"
              for r in report["most_test_like"]]
    write_atomic(out_dir / "shift_report.md", "\n".join(lines) + "\n")
    return report


def load_likeness(path: str | Path, train_file: str, encoding: str | None) -> pd.Series:
    """ID -> test-likeness from ``mcq-tune shift``'s output, checked to rank this very training file."""
    from mcqtune.runs.identity import csv_identity
    from mcqtune.runs.provenance import ProvenanceError, read_json

    path = Path(path)
    record = read_json(path.with_name(REPORT_FILE))
    if record is None:
        raise DataError(str(path), f"no {REPORT_FILE} beside it: give the {LIKENESS_FILE} that mcq-tune shift wrote")
    if record.get("train_file_sha256") != csv_identity(train_file, encoding)["bytes_sha256"]:
        raise ProvenanceError(f"--val_test_like: {path} ranks another training file ({record.get('train_file')}) "
                              f"than {train_file}; run mcq-tune shift on this one")
    frame = pd.read_csv(path, dtype={"ID": str})
    return frame.set_index("ID")["test_likeness"]


def split_test_like(frame: pd.DataFrame, likeness: pd.Series, val_fraction: float) -> tuple[pd.DataFrame,
                                                                                           pd.DataFrame]:
    """The ``val_fraction`` most test-like rows validate, the rest train."""
    missing = sorted(set(frame["ID"]) - set(likeness.index))
    if missing:
        raise DataError("--val_test_like", f"{len(missing)} training IDs have no test-likeness (first {missing[0]}); "
                                           "run mcq-tune shift on this training file")
    n_val = int(round(len(frame) * val_fraction))
    order = likeness.loc[frame["ID"]].to_numpy().argsort(kind="stable")[::-1]
    val_rows = np.sort(order[:n_val])
    val = frame.iloc[val_rows]
    return frame.drop(index=val.index).reset_index(drop=True), val.reset_index(drop=True)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcq-tune shift", description=__doc__.split("\n\n")[0])
    parser.add_argument("--train_file", required=True, help="the training CSV (competition layout)")
    parser.add_argument("--test_file", required=True, help="the test CSV (answers not needed)")
    parser.add_argument("--out_dir", default=None, help="default: <test file stem>_shift/ beside the test file")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds of the classifier")
    parser.add_argument("--top", type=int, default=20, help="how many of the most test-like rows the report lists")
    parser.add_argument("--encoding", default=None, help="decode both files with this encoding (e.g. gb18030; "
                                                          "default: UTF-8, or what a byte-order mark says)")
    parser.error = refuse_usage
    return parser
