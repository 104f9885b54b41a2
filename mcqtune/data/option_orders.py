"""Option orders: a question with its options reordered (the answer follows its text), and scores mapped back."""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from mcqtune.data.questions import ANSWER_COLUMN, ID_COLUMN, LETTERS, OPTION_COLUMNS


def permute_options(row: dict[str, Any] | pd.Series, order: Sequence[int]) -> dict[str, Any]:
    """Row whose option_X becomes the old option ``order[X]``; the answer follows its text.

    ``order=(2, 0, 1, 3)`` puts the old C in position A. ``unpermute_probs`` maps scores back.
    """
    if sorted(order) != [0, 1, 2, 3]:
        raise ValueError(f"order must be a permutation of 0..3, got {order}")
    new = dict(row)
    for position, source in enumerate(order):
        new[OPTION_COLUMNS[position]] = row[OPTION_COLUMNS[source]]
    answer = row.get(ANSWER_COLUMN) if hasattr(row, "get") else None
    if answer in LETTERS:
        new[ANSWER_COLUMN] = LETTERS[list(order).index(LETTERS.index(answer))]
    return new


def unpermute_probs(probs: Sequence[float], order: Sequence[int]) -> list[float]:
    """Scores for the permuted positions -> scores for the original options."""
    original = [0.0] * 4
    for position, source in enumerate(order):
        original[source] = probs[position]
    return original


def cyclic_orders(n: int = 4) -> list[tuple[int, ...]]:
    """The first ``n`` cyclic shifts of (0, 1, 2, 3): each option visits each letter once when n=4."""
    return [tuple((shift + i) % 4 for i in range(4)) for shift in range(n)]


def augment_with_permutations(frame: pd.DataFrame, copies: int = 1, seed: int = 42) -> pd.DataFrame:
    """Append ``copies`` randomly permuted versions of every row (IDs suffixed ``~p1``, ``~p2`` ...)."""
    import random

    rng = random.Random(seed)
    extra = []
    for copy in range(1, copies + 1):
        for _, row in frame.iterrows():
            order = list(range(4))
            while order == [0, 1, 2, 3]:
                rng.shuffle(order)
            new = permute_options(row, order)
            new[ID_COLUMN] = f"{row[ID_COLUMN]}~p{copy}"
            extra.append(new)
    return pd.concat([frame, pd.DataFrame(extra, columns=frame.columns)], ignore_index=True)
