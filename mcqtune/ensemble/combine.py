"""How an ensemble combines its members' (members, n, 4) letter probabilities, and how ``fitted`` finds its weights.

``mean`` and a weighted mean, ``logmean`` (a geometric mean, renormalised), ``max`` (each row from its most
confident member); ``fit_weights`` maximises the log-likelihood of the validation runs' true answers.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mcqtune.data.questions import LETTERS

METHODS = ("mean", "logmean", "max", "fitted")
LOG_FLOOR = 1e-12  # a probability of 0 is read as this in log space


def combine_mean(stack: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """(members, n, 4) -> (n, 4): the (weighted) mean of the probabilities."""
    weights = np.full(len(stack), 1 / len(stack)) if weights is None else np.asarray(weights, dtype=float)
    return np.tensordot(weights, stack, axes=1)


def combine_logmean(stack: np.ndarray) -> np.ndarray:
    """(members, n, 4) -> (n, 4): exp of the mean log-probability, renormalised on each row."""
    logs = np.log(np.clip(stack, LOG_FLOOR, None)).mean(axis=0)
    combined = np.exp(logs - logs.max(axis=1, keepdims=True))
    return combined / combined.sum(axis=1, keepdims=True)


def choose_most_confident(stack: np.ndarray) -> np.ndarray:
    """(members, n, 4) -> (n,): on each row the member with the highest top probability (the first on a tie)."""
    return stack.max(axis=2).argmax(axis=0)


def combine_max(stack: np.ndarray) -> np.ndarray:
    """(members, n, 4) -> (n, 4): each row's probabilities from its most confident member."""
    return stack[choose_most_confident(stack), np.arange(stack.shape[1])]


def fit_weights(stack: np.ndarray, labels: Sequence[str], iterations: int = 5000, tol: float = 1e-12) -> np.ndarray:
    """Mixture weights (non-negative, sum 1) maximising sum_i log(sum_m w_m * p_m[i, true_i]).

    The objective is concave in the weights; the EM update for mixture weights, w_m <- mean_i of member m's
    share of row i's likelihood, stays on the simplex and never lowers it, so it climbs to the maximum.
    """
    index = np.array([LETTERS.index(letter) for letter in labels])
    likelihood = np.clip(stack[:, np.arange(stack.shape[1]), index], LOG_FLOOR, None)  # (members, n)
    weights = np.full(len(stack), 1 / len(stack))
    for _ in range(iterations):
        shares = weights[:, None] * likelihood
        updated = (shares / shares.sum(axis=0, keepdims=True)).mean(axis=1)
        if np.abs(updated - weights).max() < tol:
            return updated
        weights = updated
    return weights


def log_likelihood(probs: np.ndarray, labels: Sequence[str]) -> float:
    """Mean log-probability of the true answers."""
    index = np.array([LETTERS.index(letter) for letter in labels])
    return float(np.log(np.clip(probs[np.arange(len(probs)), index], LOG_FLOOR, None)).mean())


def combine(stack: np.ndarray, method: str, weights: np.ndarray | None = None) -> np.ndarray:
    """The ensemble's (n, 4) probabilities by ``method`` (``fitted`` uses the given weights)."""
    if method == "logmean":
        return combine_logmean(stack)
    if method == "max":
        return combine_max(stack)
    return combine_mean(stack, weights if method == "fitted" else None)
