"""data/option_orders.py: a permuted question keeps its answer with its text; scores map back; cyclic orders cover."""

import pandas as pd
import pytest

from tests.helpers import ROW
from mcqtune.data.option_orders import augment_with_permutations, cyclic_orders, permute_options, unpermute_probs


def test_permute_options_moves_answer_with_its_text():
    for order in [(1, 2, 3, 0), (3, 2, 1, 0), (2, 0, 1, 3)]:
        new = permute_options(ROW, order)
        assert new[f"option_{new['answer']}"] == "北京"
        assert sorted(new[f"option_{x}"] for x in "ABCD") == sorted(ROW[f"option_{x}"] for x in "ABCD")
    probs = [0.1, 0.2, 0.3, 0.4]  # scores of the permuted positions
    assert unpermute_probs(probs, (2, 0, 1, 3)) == [0.2, 0.3, 0.1, 0.4]
    with pytest.raises(ValueError):
        permute_options(ROW, (0, 0, 1, 2))


def test_cyclic_orders_put_every_option_at_every_letter():
    orders = cyclic_orders(4)
    assert len(set(orders)) == 4
    for option in range(4):
        assert sorted(order.index(option) for order in orders) == [0, 1, 2, 3]


def test_augmentation_adds_permuted_copies_with_unique_ids():
    frame = pd.DataFrame([ROW])
    augmented = augment_with_permutations(frame, copies=2, seed=0)
    assert len(augmented) == 3 and augmented["ID"].is_unique
    for _, row in augmented.iterrows():
        assert row[f"option_{row['answer']}"] == "北京"
