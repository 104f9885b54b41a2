"""Letter-bias correction: a model's preference for some answer letters whatever the options say.

PriDe (arXiv 2309.03882): if the probability a model gives the letter at position i is proportional to
prior[i] x content[option shown at i], then over orders in which every option visits every position once
(``option_orders.cyclic_orders(4)``) the content factors cancel in the geometric mean, which leaves the prior.
Dividing a question's position probabilities by it (and renormalising) removes the preference. infer.py
estimates the prior on a sample of the test questions (``--debias_letters true``); ensemble.py takes one
(``--debias_prior``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mcqtune.data.questions import LETTERS

LOG_FLOOR = 1e-12  # probabilities are clipped here before logarithms


def estimate_letter_prior(per_order_probs: np.ndarray, orders: Sequence[Sequence[int]]) -> np.ndarray:
    """The model's preference for each letter position, whatever the options say (PriDe, arXiv 2309.03882).

    ``per_order_probs`` has shape (orders, n, 4): the probabilities of the letters shown for the same n
    questions under each option order, where order ``o`` shows original option ``o[i]`` at position ``i``
    (``option_orders.permute_options``). If the model's position probability is proportional to
    prior[position] * content[option shown there], the product over orders in which every option visits every
    position once (the 4 cyclic orders) has the same content factor at every position; so the geometric mean
    over orders and questions of the position probabilities, normalised, is the prior.
    """
    probs = np.asarray(per_order_probs, dtype=float)
    if probs.ndim != 3 or probs.shape[0] != len(orders) or probs.shape[2] != len(LETTERS):
        raise ValueError(f"per_order_probs must have shape (orders={len(orders)}, n, 4), got {probs.shape}")
    columns = np.array([list(order) for order in orders]).T  # position -> the options it showed over the orders
    if not all(sorted(column) == list(range(len(LETTERS))) for column in columns):
        raise ValueError(f"every option must appear once at every position over the orders (e.g. "
                         f"option_orders.cyclic_orders(4)), got {orders}")
    logs = np.log(np.clip(probs, LOG_FLOOR, None)).mean(axis=(0, 1))
    prior = np.exp(logs - logs.max())
    return prior / prior.sum()


def debias(probs: np.ndarray, prior: Sequence[float]) -> np.ndarray:
    """Position probabilities (..., 4) divided by the letter prior and renormalised on the last axis."""
    adjusted = np.asarray(probs, dtype=float) / np.asarray(prior, dtype=float)
    return adjusted / adjusted.sum(axis=-1, keepdims=True)
