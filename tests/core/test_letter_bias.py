"""core/letter_bias.py: the prior of a model biased towards one letter is recovered, and dividing it out helps."""

import numpy as np
import pytest

from tests.helpers import softmax
from mcqtune.core.letter_bias import debias, estimate_letter_prior
from mcqtune.data.option_orders import cyclic_orders


def biased_model(n=400, bias=1.5, seed=0):
    """Probabilities under the 4 cyclic orders of a model that adds ``bias`` to letter A whatever it shows."""
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % 4  # balanced: each letter is the answer of a quarter of the questions
    content = rng.normal(size=(n, 4)) + 1.2 * np.eye(4)[truth]  # per original option
    orders = cyclic_orders(4)
    shown = np.stack([content[:, list(order)] for order in orders])  # position i shows option order[i]
    return softmax(shown + np.array([bias, 0, 0, 0])), orders, truth


def test_the_estimated_letter_prior_recovers_the_bias_and_debiasing_raises_accuracy():
    per_order, orders, truth = biased_model()
    prior = estimate_letter_prior(per_order, orders)
    assert prior.argmax() == 0 and np.isclose(prior.sum(), 1)
    assert np.allclose(prior, softmax([1.5, 0, 0, 0]), atol=1e-6)  # the content cancels over the cyclic orders
    plain = per_order[0]  # the identity order: positions are the original letters
    before = (plain.argmax(axis=1) == truth).mean()
    after = (debias(plain, prior).argmax(axis=1) == truth).mean()
    assert after > before + 0.05
    assert np.allclose(debias(plain, prior).sum(axis=1), 1)
    unbiased, _, _ = biased_model(bias=0.0)
    assert np.allclose(estimate_letter_prior(unbiased, orders), 0.25, atol=1e-6)
    with pytest.raises(ValueError, match="every option must appear once at every position"):
        estimate_letter_prior(per_order[:2], orders[:2])
