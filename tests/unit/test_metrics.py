"""Metrics on hand-computed cases, rank computation and the MostPop baseline."""

import math

import numpy as np
import pandas as pd
import pytest

from recsys.evaluation.baselines import MostPop
from recsys.evaluation.metrics import (
    bootstrap_interval,
    evaluate,
    metrics_from_ranks,
    ndcg_at_k,
    ranks_of_targets,
    recall_at_k,
)

pytestmark = pytest.mark.unit


def test_recall_and_ndcg_hand_computed():
    ranks = np.array([0, 1, 9, 10, 50])
    assert recall_at_k(ranks, 10) == pytest.approx(3 / 5)
    assert recall_at_k(ranks, 1) == pytest.approx(1 / 5)
    expected = (1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(11)) / 5
    assert ndcg_at_k(ranks, 10) == pytest.approx(expected)
    assert ndcg_at_k(ranks, 100) == pytest.approx(expected + (1 / math.log2(12) + 1 / math.log2(52)) / 5)


def test_edge_cases():
    assert recall_at_k(np.array([]), 10) == 0.0
    assert ndcg_at_k(np.array([]), 10) == 0.0
    assert recall_at_k(np.array([500]), 10) == 0.0  # no hits
    assert recall_at_k(np.array([3]), 1000) == 1.0  # k larger than the catalogue
    with pytest.raises(ValueError):
        recall_at_k(np.array([1]), 0)
    assert set(metrics_from_ranks(np.array([0]))) == {
        "recall_at_10",
        "ndcg_at_10",
        "recall_at_50",
        "ndcg_at_50",
        "recall_at_100",
        "ndcg_at_100",
    }


def test_rank_counts_strictly_higher_unseen_items():
    scores = np.array([[0.9, 0.5, 0.8, 0.5, 0.1]])
    # target item 1 (0.5): higher are items 0 and 2; item 3 ties (not counted)
    assert ranks_of_targets(scores, np.array([1]), [np.array([], dtype=int)]).tolist() == [2]
    # item 0 seen -> excluded
    assert ranks_of_targets(scores, np.array([1]), [np.array([0])]).tolist() == [1]


def test_evaluate_over_all_heldout_users_checkerboard():
    # 4 users x 4 items, each user's best item is (u + 1) % 4: a perfect scorer ranks it 0.
    def perfect(users):
        out = np.zeros((len(users), 4))
        out[np.arange(len(users)), (users + 1) % 4] = 1.0
        return out

    heldout = pd.DataFrame({"user_idx": [0, 1, 2, 3], "item_idx": [1, 2, 3, 0]})
    seen = [np.array([], dtype=int)] * 4
    assert evaluate(perfect, heldout, seen, batch_size=3)["ndcg_at_10"] == pytest.approx(1.0)
    reversed_heldout = heldout.assign(item_idx=[3, 0, 1, 2])
    assert evaluate(perfect, reversed_heldout, seen)["recall_at_10"] == pytest.approx(1.0)
    assert evaluate(perfect, reversed_heldout, seen, ks=(1,))["recall_at_1"] == 0.0


def test_mostpop_ranks_by_popularity():
    pop = MostPop(np.array([5, 50, 1]))
    scores = pop(np.array([0, 1]))
    assert scores.shape == (2, 3)
    assert ranks_of_targets(scores, np.array([1, 0]), [np.array([], dtype=int)] * 2).tolist() == [0, 1]


def test_bootstrap_interval_brackets_the_mean():
    ranks = np.random.default_rng(0).integers(0, 40, size=500)
    low, high = bootstrap_interval(ranks, recall_at_k, 10)
    assert low < recall_at_k(ranks, 10) < high


def test_ease_recovers_the_checkerboard(tiny):
    from recsys.data.views import seen_lists
    from recsys.evaluation.baselines import EASE

    train = tiny.split("train")
    before = tiny.interactions[tiny.interactions["split"].isin(["train", "valid"])]
    model = EASE(train, before, tiny.n_users, tiny.n_items, l2=1.0)
    assert np.allclose(np.diag(model.weights), 0.0)
    metrics = evaluate(model, tiny.split("test"), seen_lists(before, tiny.n_users))
    # same-parity items co-occur, opposite-parity items never do: held-out items rank near the top
    assert metrics["recall_at_10"] > 0.9
    with pytest.raises(ValueError, match="l2"):
        EASE(train, before, tiny.n_users, tiny.n_items, l2=0)
