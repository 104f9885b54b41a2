"""The members of an ensemble read and checked: infer.py run folders or predictions.csv files that answered the
same questions in the same order, each row with four letter probabilities summing to 1.

Every mistake is one ``EnsembleError`` naming the member and the row: a missing or repeated ID, a missing or
unusable probability, other questions or another order than the first member, another test file (by the hash
its report.json recorded), the same predictions named twice, or a validation run without true answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mcqtune.errors import UserError
from mcqtune.data.questions import LETTERS
from mcqtune.runs.provenance import check_same_answered, check_same_models
from mcqtune.runs.predictions import PROB_COLUMNS, TRUE_ANSWER_COLUMN
from mcqtune.runs.folder import same_file

SUM_TOLERANCE = 1e-3  # infer.py rounds each probability to 6 decimals


class EnsembleError(UserError):
    """A member, a validation file or an option that cannot be ensembled as given."""


@dataclass
class Member:
    """One run's predictions: its name as given, the rows in file order and their (n, 4) probabilities."""

    name: str
    path: Path
    frame: pd.DataFrame
    probs: np.ndarray
    test_file: str | None = None

    @property
    def ids(self) -> list[str]:
        return self.frame["ID"].tolist()

    @property
    def answers(self) -> np.ndarray:
        return np.array(LETTERS)[self.probs.argmax(axis=1)]


def find_predictions(member: str) -> Path:
    """A run folder -> its predictions.csv; a file -> itself."""
    path = Path(member)
    if path.is_dir():
        path = path / "predictions.csv"
        if not path.is_file():
            raise EnsembleError(f"{member}: the folder has no predictions.csv; give an infer.py run folder or a "
                                "predictions.csv path")
    elif not path.is_file():
        raise EnsembleError(f"{member}: no such file or folder; give an infer.py run folder or a predictions.csv")
    return path


def read_test_file(predictions: Path) -> str | None:
    """The ``test_file`` recorded in the run's report.json beside the predictions, when there is one."""
    return read_report(predictions).get("test_file")


def read_report(predictions: Path) -> dict:
    report = predictions.with_name("report.json")
    try:
        found = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def check_ids(frame: pd.DataFrame, name: str) -> None:
    """Every row has an ID, and no ID appears twice."""
    if "ID" not in frame:
        raise EnsembleError(f"{name}: no ID column; give predictions.csv as infer.py writes it")
    if frame.empty:
        raise EnsembleError(f"{name}: no rows; give the predictions.csv of a finished run")
    empty = frame["ID"].str.strip() == ""
    if empty.any():
        raise EnsembleError(f"{name}: {int(empty.sum())} rows have no ID (first at row {int(empty.idxmax()) + 1})")
    repeated = frame["ID"][frame["ID"].duplicated()]
    if len(repeated):
        raise EnsembleError(f"{name}: {len(repeated)} duplicate IDs (e.g. '{repeated.iloc[0]}'); each question "
                            "must appear once")


def check_probabilities(frame: pd.DataFrame, name: str) -> np.ndarray:
    """The (n, 4) probabilities: present and numeric on every row, non-negative, summing to 1."""
    missing = [c for c in PROB_COLUMNS if c not in frame]
    if missing:
        raise EnsembleError(f"{name}: no {', '.join(missing)} columns; ensembling needs the letter probabilities "
                            "of every row (run infer.py in score mode)")
    probs = frame[list(PROB_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    problems = [("have no (or a non-numeric) probability; run infer.py in score mode", np.isnan(probs).any(axis=1)),
                ("have a negative probability", (probs < 0).any(axis=1))]
    problems.append(("have probabilities that do not sum to 1",
                     ~np.isnan(probs).any(axis=1) & (np.abs(probs.sum(axis=1) - 1) > SUM_TOLERANCE)))
    for what, bad in problems:
        if bad.any():
            raise EnsembleError(f"{name}: {int(bad.sum())} rows {what} (e.g. ID '{frame['ID'].iloc[bad.argmax()]}')")
    return probs / probs.sum(axis=1, keepdims=True)


def load_member(member: str) -> Member:
    """Read one member (IDs and answers as text) and check its IDs and probabilities."""
    path = find_predictions(member)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise EnsembleError(f"{member}: not a readable predictions.csv ({err})") from None
    check_ids(frame, member)
    probs = check_probabilities(frame, member)
    return Member(name=member, path=path, frame=frame, probs=probs, test_file=read_test_file(path))


def check_same_questions(first: Member, other: Member) -> None:
    """``other`` answered the questions of ``first``, in the same order."""
    mine, theirs = set(first.ids), set(other.ids)
    if mine != theirs:
        only_other, only_first = sorted(theirs - mine), sorted(mine - theirs)
        example = (f"'{only_other[0]}' is only in {other.name}" if only_other
                   else f"'{only_first[0]}' is only in {first.name}")
        raise EnsembleError(f"{other.name} answered other questions than {first.name}: "
                            f"{len(only_other) + len(only_first)} IDs differ (e.g. {example}); every member "
                            "must answer the same test file")
    if first.ids != other.ids:
        row = next(i for i, (a, b) in enumerate(zip(first.ids, other.ids)) if a != b)
        raise EnsembleError(f"{other.name} lists the questions of {first.name} in another order (row {row + 1}: "
                            f"'{other.ids[row]}' instead of '{first.ids[row]}'); run both on the same test file")


def load_members(names: Sequence[str], allow_bare: bool = False) -> list[Member]:
    """Every member, checked against the first one; all must have answered one test file by their provenance
    (runs/provenance.py: a bare predictions.csv only with ``allow_bare``)."""
    members = [load_member(name) for name in names]
    for number, member in enumerate(members):  # a member named twice would silently count double
        twice = next((m for m in members[:number] if same_file(m.path, member.path)), None)
        if twice is not None:
            raise EnsembleError(f"{member.name} and {twice.name} are the same predictions; name each member once")
    for other in members[1:]:
        check_same_questions(members[0], other)
    # the same IDs need not be the same questions (another file, options reordered)
    check_same_answered([m.path for m in members], consumer="ensemble", allow_bare=allow_bare)
    return members


def true_labels(member: Member) -> np.ndarray | None:
    """The true answers (letters, '' where unknown), or None when the file has none."""
    if TRUE_ANSWER_COLUMN not in member.frame:
        return None
    labels = member.frame[TRUE_ANSWER_COLUMN].str.strip().str.upper().to_numpy()
    return labels if np.isin(labels, LETTERS).any() else None


def load_validation(names: Sequence[str], members: Sequence[Member], allow_bare: bool = False) -> list[Member]:
    """One validation run per member, made by that member's models (by both records), each with a true answer on
    every row, all on the same questions."""
    if len(names) != len(members):
        raise EnsembleError(f"--validation got {len(names)} files for {len(members)} members; give one validation "
                            "run per member, in the members' order")
    for name, member in zip(names, members):
        if same_file(find_predictions(name), member.path):
            raise EnsembleError(f"--validation {name} is the test member {member.name} itself; weights are fitted "
                                "on validation predictions only")
    validation = load_members(names, allow_bare=allow_bare)
    for run, member in zip(validation, members):
        check_same_models(run.path, member.path, consumer="--validation", allow_bare=allow_bare)
    for run in validation:
        labels = true_labels(run)
        if labels is None or not np.isin(labels, LETTERS).all():
            raise EnsembleError(f"--validation {run.name}: every row needs a true_answer A-D (run infer.py on a "
                                "validation file that has answers)")
    return validation
