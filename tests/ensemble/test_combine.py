"""ensemble/combine.py: logmean, max and the weighted mean on hand-made stacks; fitted weights reach the best
mixture."""

import numpy as np

from mcqtune.ensemble import combine as ensemble_combine
from tests.helpers import confident
from mcqtune.data.questions import LETTERS


def test_logmean_and_max_on_a_hand_made_example():
    stack = np.array([[[0.7, 0.1, 0.1, 0.1], [0.4, 0.3, 0.2, 0.1]],
                      [[0.1, 0.6, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]]])
    geometric = np.sqrt(stack[0] * stack[1])
    assert np.allclose(ensemble_combine.combine_logmean(stack), geometric / geometric.sum(axis=1, keepdims=True))
    # row 0: member 0 is surest (0.7 > 0.6); row 1: member 0 again (0.4 > 0.25)
    assert list(ensemble_combine.choose_most_confident(stack)) == [0, 0]
    assert np.allclose(ensemble_combine.combine_max(stack), stack[0])
    stack[1, 1] = [0.05, 0.05, 0.05, 0.85]
    assert list(ensemble_combine.choose_most_confident(stack)) == [0, 1]
    assert np.allclose(ensemble_combine.combine_max(stack), [stack[0, 0], stack[1, 1]])
    assert np.allclose(ensemble_combine.combine_mean(stack), stack.mean(axis=0))
    # one sure member carries the mean to A; the logmean follows the two that all but rule A out
    disagree = np.array([[[0.97, 0.01, 0.01, 0.01]], [[0.001, 0.4, 0.3, 0.299]], [[0.001, 0.4, 0.3, 0.299]]])
    assert ensemble_combine.combine_mean(disagree).argmax() == 0
    assert ensemble_combine.combine_logmean(disagree).argmax() == 1


def test_fit_weights_finds_the_best_mixture():
    truth = [LETTERS[i % 4] for i in range(120)]
    stack = np.stack([confident(truth, 1.5, 5), confident(truth, 1.0, 6)])
    weights = ensemble_combine.fit_weights(stack, truth)
    best = max(ensemble_combine.log_likelihood(ensemble_combine.combine_mean(stack, [w, 1 - w]), truth)
               for w in np.linspace(0, 1, 1001))
    assert ensemble_combine.log_likelihood(ensemble_combine.combine_mean(stack, weights), truth) >= best - 1e-6
