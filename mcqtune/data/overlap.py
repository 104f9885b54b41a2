"""Test questions that also stand in the training data (leakage), for ``mcq-tune shift`` and ``mcq-tune validate``.

Two rows are the same question **exactly** when the question and its four options are equal in order, and **after
normalising** when they are equal once Unicode compatibility forms are folded (full-width to half-width), case is
folded, whitespace and punctuation are dropped, and the options are taken in any order (a copy with shuffled
options is still the same question).
"""

from __future__ import annotations

import unicodedata
from typing import Sequence

import pandas as pd

LISTED = 20  # pairs listed in a report; the counts are always whole


def normalised(text: str) -> str:
    """``text`` with compatibility forms folded, case folded, and whitespace and punctuation dropped."""
    folded = unicodedata.normalize("NFKC", str(text)).casefold()
    return "".join(c for c in folded if not c.isspace() and not unicodedata.category(c).startswith("P"))


def exact_key(row, options: Sequence[str]) -> tuple:
    return (str(row["question"]), *(str(row[c]) for c in options))


def normalised_key(row, options: Sequence[str]) -> tuple:
    return (normalised(row["question"]), *sorted(normalised(row[c]) for c in options))


def question_keys(frame: pd.DataFrame, options: Sequence[str]) -> list[tuple]:
    """Each row's question as this module tells questions apart (after normalising): what training compares to
    keep validation questions out of extra and pseudo-labelled rows."""
    return [normalised_key(row, options) for _, row in frame.fillna("").iterrows()]


def overlap(train: pd.DataFrame, test: pd.DataFrame, options: Sequence[str]) -> dict:
    """How many test questions also stand in ``train`` (questions with their ``options`` columns), exactly and after
    normalising (the exact ones included), and the first pairs (test ID, training ID, how they match)."""
    train = train.fillna("")
    test = test.fillna("")
    exact = {exact_key(row, options): row["ID"] for _, row in train.iterrows()}
    loose = {normalised_key(row, options): row["ID"] for _, row in train.iterrows()}
    pairs = []
    for _, row in test.iterrows():
        same, alike = exact_key(row, options), normalised_key(row, options)
        if same in exact:
            pairs.append({"test_ID": row["ID"], "train_ID": exact[same], "match": "exact"})
        elif alike in loose:
            pairs.append({"test_ID": row["ID"], "train_ID": loose[alike], "match": "normalised"})
    return {"test_rows": len(test), "exact": sum(p["match"] == "exact" for p in pairs), "normalised": len(pairs),
            "pairs": pairs[:LISTED]}


def describe_overlap(found: dict) -> str:
    """One sentence: the counts, and what to do about them."""
    if not found["normalised"]:
        return f"none of the {found['test_rows']} test questions stands in the training data"
    return (f"{found['normalised']} of the {found['test_rows']} test questions also stand in the training data "
            f"({found['exact']} exactly, {found['normalised'] - found['exact']} more after normalising whitespace, "
            "punctuation, width and option order): a validation split that holds them overstates the leaderboard, "
            "and a model trained on them has seen their answers")
