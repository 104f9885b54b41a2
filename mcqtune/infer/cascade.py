"""Confidence cascade: answer everything fast, then answer again only the least confident questions.

    python infer.py --config configs/infer-14b-4090.yaml --test_file test.csv --output_file fast.csv
    python infer.py --config configs/infer-14b-4090.yaml --test_file test.csv --output_file final.csv \
        --rescore fast_run --rescore_fraction 0.2 --permutations 4          # or another model / an ensemble

The second command reads the first run's predictions (its run folder or predictions.csv; it must have
answered exactly this test file, with probabilities), picks the given share of questions whose margin between
the two most probable letters is smallest, answers only those with its own model and options, and keeps the
first run's answers for the rest. predictions.csv says which rows were answered again (``rescored``) and what
they were before (``answer_before``); report.json counts the rows answered again and the answers that changed.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mcqtune.errors import UserError
from mcqtune.runs.predictions import PROB_COLUMNS
from mcqtune.runs.provenance import check_answered


# what a generated or reasoned reply adds to a row; a vote of sampled replies adds its counts
REPLY_COLUMNS = ("raw", "rule", "reasoning_tokens", "vote", "closed_replies")
COUNT_COLUMNS = ("reasoning_tokens", "closed_replies")


class CascadeError(UserError):
    """The first run's predictions cannot be used for this test file."""


def predictions_file(source: str | Path) -> Path:
    path = Path(source)
    path = path / "predictions.csv" if path.is_dir() else path
    if not path.is_file():
        raise CascadeError(f"--rescore {source}: no predictions.csv there (give infer.py's run folder or the file)")
    return path


def read_first_run(source: str | Path, frame: pd.DataFrame, test_sha: str | None = None, test_name: str = "",
                   allow_bare: bool = False, data: bytes | None = None) -> pd.DataFrame:
    """The first run's predictions in the test file's row order; refused unless its report.json says it answered
    this very test file (runs/provenance.py; a bare file only with ``allow_bare``), they cover exactly its IDs
    and every row has four probabilities. ``data``: the predictions' bytes, when already read."""
    path = predictions_file(source)
    check_answered(path, test_sha, consumer="--rescore", test_name=test_name or "this test file",
                   allow_bare=allow_bare)
    # an empty cell is missing in every column a reply fills (a first run that was itself a cascade has them for
    # its rows answered again), so that the rows answered now can be written into them
    reply_columns = (*PROB_COLUMNS, *REPLY_COLUMNS)
    first = pd.read_csv(io.BytesIO(path.read_bytes() if data is None else data), dtype={"ID": str, "answer": str},
                        keep_default_na=False,
                        na_values={c: [""] for c in reply_columns})
    for column in COUNT_COLUMNS:
        if column in first:
            first[column] = pd.to_numeric(first[column], errors="coerce").astype("Int64")
    missing = [c for c in ("ID", "answer", *PROB_COLUMNS) if c not in first]
    if missing:
        raise CascadeError(f"{path} has no {', '.join(missing)} column(s): the first run must be a score-mode run")
    if first["ID"].duplicated().any() or set(first["ID"]) != set(frame["ID"]):
        differ = len(set(first["ID"]) ^ set(frame["ID"]))
        raise CascadeError(f"{path} answered other questions than the test file ({differ} IDs differ, or repeated "
                           "IDs): rescore needs the first run of this same test file")
    first = first.set_index("ID").loc[frame["ID"]].reset_index()
    unanswered = first[list(PROB_COLUMNS)].isna().any(axis=1)
    if unanswered.any():
        raise CascadeError(f"{path}: {int(unanswered.sum())} rows have no letter probabilities (answers read from a "
                           "generated or reasoning reply); rescore needs four probabilities on every row: give a "
                           "score-mode run")
    return first


def margins(probs: np.ndarray) -> np.ndarray:
    """The gap between the two most probable letters of each row (small: the model hesitated)."""
    top = np.sort(probs, axis=1)
    return top[:, -1] - top[:, -2]


def least_confident(first: pd.DataFrame, fraction: float) -> list[str]:
    """IDs of the ``fraction`` of rows with the smallest margins (ties broken by file order)."""
    count = int(round(fraction * len(first)))
    if count == 0:
        raise CascadeError(f"--rescore_fraction {fraction} of {len(first)} questions is no question; give at least "
                           f"{1 / len(first):.3g}")
    order = np.argsort(margins(first[list(PROB_COLUMNS)].to_numpy(dtype=float)), kind="stable")
    return list(first["ID"].iloc[np.sort(order[:count])])


@dataclass
class Rescore:
    """A cascade step: the whole test file, the first run's predictions and the rows to answer again."""

    frame: pd.DataFrame
    first: pd.DataFrame
    ids: list[str]
    source: str  # the first run's predictions.csv, absolute
    source_sha256: str  # ... by the bytes that were read

    @classmethod
    def plan(cls, source: str, frame: pd.DataFrame, fraction: float, test_sha: str | None = None,
             test_name: str = "", allow_bare: bool = False) -> "Rescore":
        path = predictions_file(source).resolve()
        data = path.read_bytes()  # hashed and parsed from one read
        first = read_first_run(path, frame, test_sha, test_name, allow_bare, data=data)
        return cls(frame, first, least_confident(first, fraction), str(path), hashlib.sha256(data).hexdigest())

    def rows(self) -> pd.DataFrame:
        """The questions to answer again, in file order."""
        return self.frame[self.frame["ID"].isin(set(self.ids))].reset_index(drop=True)

    def merge(self, again: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
        """The first run's predictions with the rows answered again replaced; and what that changed."""
        merged = self.first.copy()
        merged["rescored"] = merged["ID"].isin(set(self.ids))
        merged["answer_before"] = merged["answer"]
        new = again.set_index("ID")
        chosen = merged["rescored"].to_numpy()
        # every column the rows answered again have (a vote's counts too), empty on the other rows where the first
        # run has no such column; a reasoning reply has no probabilities: its rows get none
        for column in dict.fromkeys((*PROB_COLUMNS, *new.columns)):
            if column not in new:
                merged.loc[chosen, column] = float("nan")
                continue
            if column not in merged:
                merged[column] = pd.Series(pd.NA, index=merged.index,
                                           dtype="Int64" if pd.api.types.is_integer_dtype(new[column]) else object)
            merged.loc[chosen, column] = new.loc[merged.loc[chosen, "ID"], column].to_numpy()
        changed = int((merged["answer"] != merged["answer_before"]).sum())
        first_run = {"path": self.source, "sha256": self.source_sha256}
        return merged, {"rescore": {"first_run": first_run, "rows": len(self.ids), "of": len(merged),
                                    "answers_changed": changed}}
