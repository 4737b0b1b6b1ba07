"""The online evaluation's metrics against hand-computed values (recsys.evaluation.online)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from recsys.evaluation import online

pytestmark = pytest.mark.unit


def test_user_metrics_count_every_new_positive_and_unknown_movies_as_misses():
    lists = {1: [10, 20, 30, 40], 2: [50, 60], 3: [10, 11], 5: [1, 2, 3]}
    positives = {
        1: {20, 99},  # one hit at position 2; 99 is a movie the model does not know: a miss
        2: {70},  # no hit
        3: set(),  # no new positive: not evaluated
        4: {10},  # no list (a user new tonight): not evaluated
        5: {1, 3},  # two hits, at positions 1 and 3
    }
    users = online.per_user({u: np.array(v) for u, v in lists.items()}, positives).set_index("user_id")
    assert users.index.tolist() == [1, 2, 5] and users["positives"].tolist() == [2, 1, 2]
    assert users.loc[1, "hit_rate_at_10"] == 1.0 and users.loc[1, "recall_at_10"] == 0.5
    assert users.loc[1, "ndcg_at_10"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert (
        users.loc[2, ["hit_rate_at_10", "recall_at_10", "recall_at_100", "ndcg_at_10"]].tolist() == [0.0] * 4
    )
    assert users.loc[5, "recall_at_10"] == 1.0
    assert users.loc[5, "ndcg_at_10"] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    mean = online.summary(users.reset_index())
    assert mean["users"] == 3 and mean["positives"] == 5
    assert mean["hit_rate_at_10"] == pytest.approx(2 / 3)
    assert mean["recall_at_10"] == pytest.approx((0.5 + 0 + 1) / 3)


def test_recall_at_100_sees_past_the_top_10():
    ranked = np.arange(100, 200)
    users = online.per_user({1: ranked}, {1: {150, 105}})
    assert users["recall_at_10"].item() == 0.5 and users["recall_at_100"].item() == 1.0
    assert users["hit_rate_at_10"].item() == 1.0


def test_list_metrics():
    lists = {1: np.array([10, 20, 30, 40]), 2: np.array([50, 60]), 3: np.array([10, 11])}
    assert online.coverage(lists, catalogue_size=10) == 0.7  # 10, 20, 30, 40, 50, 60, 11
    assert online.coverage(lists, catalogue_size=10, k=1) == 0.2  # 10 and 50
    counts = pd.Series({10: 100, 11: 50, 20: 10, 30: 1})  # percentiles 100, 66.7, 33.3, 0
    assert online.popularity_percentile({1: np.array([10, 20]), 2: np.array([30, 99])}, counts) == (
        pytest.approx((100 + 100 / 3 + 0 + 0) / 4)  # 99: not in the catalogue, at 0
    )
    now = {1: np.array([1, 2, 3, 4]), 2: np.array([5, 6])}
    assert online.churn(now, {1: np.array([1, 2, 9, 8]), 3: np.array([7])}) == 0.5  # user 2: no yesterday
    assert math.isnan(online.churn(now, {}))


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible():
    values = np.r_[np.ones(30), np.zeros(70)]
    low, high = online.bootstrap(values)
    assert low < 0.3 < high and (low, high) == online.bootstrap(values)
    assert all(math.isnan(v) for v in online.bootstrap(np.array([])))


def test_a_first_night_without_positives_measures_to_strict_json():
    """No previous lists: churn is null, not NaN, which Airflow's XCom and replay.json refuse; no
    user with a new positive: the user metrics are null too (nothing measured, not a night of misses)."""
    from recsys.pipelines.evaluate import json_safe, measure

    catalogue = pd.DataFrame({"movie_id": [1, 2, 3], "train_count": [5, 3, 1]})
    row = json_safe(measure({1: np.array([1, 2])}, {}, catalogue, previous=None)[0])
    assert row["churn_at_10"] is None and row["users"] == 0 and row["hit_rate_at_10"] is None
    assert row["coverage_at_10"] == 2 / 3
    json.dumps(row, allow_nan=False)


def test_compare_gives_the_difference_of_means_its_interval_and_the_detectable_effect():
    champion = np.array([1.0, 0.0] * 50)  # mean 0.5, variance (ddof 1) 0.2525
    canary = np.array([1.0, 1.0, 1.0, 0.0] * 25)  # mean 0.75, variance 0.1894
    got = online.compare(champion, canary)
    assert got["diff"] == pytest.approx(0.25) and (got["users_champion"], got["users_canary"]) == (100, 100)
    se = math.sqrt(champion.var(ddof=1) / 100 + canary.var(ddof=1) / 100)
    assert got["detectable"] == pytest.approx((1.959964 + 0.841621) * se)
    assert got["low"] < 0.25 < got["high"]
    assert got["high"] - got["low"] == pytest.approx(2 * 1.96 * se, rel=0.15)  # the normal interval's width
    assert online.compare(champion, canary) == got  # seeded: the same numbers every night


def test_compare_with_an_empty_arm_measures_nothing():
    got = online.compare(np.array([1.0, 0.0]), np.array([]))
    assert got["users_canary"] == 0 and all(math.isnan(got[k]) for k in ("diff", "low", "high", "detectable"))
