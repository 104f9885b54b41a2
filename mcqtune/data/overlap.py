"""Test questions that also stand in the training data (leakage), for ``mcq-tune shift`` and ``mcq-tune validate``.

Two rows are the same question **exactly** when the question and its four options are equal in order, and **after
normalising** when they are equal once Unicode compatibility forms are folded (full-width to half-width), case is
folded, whitespace and punctuation are dropped, and the options are taken in any order (a copy with shuffled
options is still the same question).
"""

from __future__ import annotations

import unicodedata

import pandas as pd

from mcqtune.data.questions import LETTERS

OPTION_COLUMNS = tuple(f"option_{letter}" for letter in LETTERS)
LISTED = 20  # pairs listed in a report; the counts are always whole


def normalised(text: str) -> str:
    """``text`` with compatibility forms folded, case folded, and whitespace and punctuation dropped."""
    folded = unicodedata.normalize("NFKC", str(text)).casefold()
    return "".join(c for c in folded if not c.isspace() and not unicodedata.category(c).startswith("P"))


def exact_key(row) -> tuple:
    return (str(row["question"]), *(str(row[c]) for c in OPTION_COLUMNS))


def normalised_key(row) -> tuple:
    return (normalised(row["question"]), *sorted(normalised(row[c]) for c in OPTION_COLUMNS))


def overlap(train: pd.DataFrame, test: pd.DataFrame) -> dict:
    """How many test questions also stand in ``train``, exactly and after normalising (the exact ones included),
    and the first pairs (test ID, training ID, how they match)."""
    train = train.fillna("")
    test = test.fillna("")
    exact = {exact_key(row): row["ID"] for _, row in train.iterrows()}
    loose = {normalised_key(row): row["ID"] for _, row in train.iterrows()}
    pairs = []
    for _, row in test.iterrows():
        if exact_key(row) in exact:
            pairs.append({"test_ID": row["ID"], "train_ID": exact[exact_key(row)], "match": "exact"})
        elif normalised_key(row) in loose:
            pairs.append({"test_ID": row["ID"], "train_ID": loose[normalised_key(row)], "match": "normalised"})
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
