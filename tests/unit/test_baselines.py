"""iALS baseline on a synthetic checkerboard with a known answer."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recsys.evaluation.ials import IALS, tune_ials

pytestmark = pytest.mark.unit

N_USERS, N_ITEMS = 20, 12  # users u like items with i % 2 == u % 2


def checkerboard_pairs(held_out: dict[int, int] | None = None) -> pd.DataFrame:
    """Every in-group (user, item) pair, except each user's held-out item."""
    held_out = held_out or {}
    rows = [(u, i) for u in range(N_USERS) for i in range(N_ITEMS) if i % 2 == u % 2 and held_out.get(u) != i]
    return pd.DataFrame(rows, columns=["user_idx", "item_idx"])


def fit(train: pd.DataFrame, history: pd.DataFrame | None = None, **kw) -> IALS:
    params = {"factors": 2, "regularization": 1.0, "iterations": 10, **kw}  # low rank: no memorising
    return IALS(train, train if history is None else history, N_USERS, N_ITEMS, **params)


@pytest.mark.parametrize("seed", [0, 1])
def test_ranks_held_out_in_group_item_above_every_out_group_item(seed):
    held = {u: (u * 2 + u % 2) % N_ITEMS for u in range(N_USERS)}  # an in-group item per user
    model = fit(checkerboard_pairs(held), seed=seed)
    scores = model(np.arange(N_USERS))
    for u, item in held.items():
        out_group = [i for i in range(N_ITEMS) if i % 2 != u % 2]
        assert scores[u, item] > scores[u, out_group].max()


def test_scores_shape_and_dtype():
    scores = fit(checkerboard_pairs())(np.array([3, 0, 3]))
    assert scores.shape == (3, N_ITEMS)
    assert scores.dtype == np.float64
    assert fit(checkerboard_pairs())(np.array([], dtype=np.int64)).shape == (0, N_ITEMS)


def test_user_factors_are_recalculated_from_history():
    held = {0: 2}
    train = checkerboard_pairs(held)
    history = pd.concat([train, pd.DataFrame({"user_idx": [0], "item_idx": [2]})])
    base, extra = fit(train), fit(train, history)
    np.testing.assert_allclose(base(np.array([1, 5])), extra(np.array([1, 5])))  # same fit
    assert not np.allclose(base(np.array([0])), extra(np.array([0])))


def test_unknown_items_are_ignored():
    train = checkerboard_pairs()
    with_unknown = pd.concat([train, pd.DataFrame({"user_idx": [0, 1], "item_idx": [-1, -1]})])
    np.testing.assert_allclose(fit(with_unknown)(np.arange(N_USERS)), fit(train)(np.arange(N_USERS)))


@pytest.mark.parametrize(
    "kw", [{"factors": 0}, {"iterations": 0}, {"regularization": 0.0}, {"alpha": -1.0}, {"factors": 2.5}]
)
def test_bad_params_raise(kw):
    with pytest.raises(ValueError):
        fit(checkerboard_pairs(), **kw)


def test_bad_inputs_raise():
    train = checkerboard_pairs()
    with pytest.raises(ValueError):
        IALS(train, train, N_USERS, N_ITEMS - 1)  # item index out of range
    with pytest.raises(ValueError):
        IALS(train, train, 0, N_ITEMS)
    with pytest.raises(ValueError):
        IALS(train.rename(columns={"item_idx": "item"}), train, N_USERS, N_ITEMS)
    with pytest.raises(ValueError):
        IALS(train.iloc[:0], train, N_USERS, N_ITEMS)
    with pytest.raises(ValueError):
        fit(train)(np.array([N_USERS]))


def test_tune_ials_reports_chosen_config_and_grid(tiny):
    grid = [{"factors": 4, "regularization": r, "iterations": 5, "alpha": 1.0} for r in (0.1, 1.0)]
    out = tune_ials(tiny, grid)
    assert out["regularization"] in (0.1, 1.0) and out["factors"] == 4
    assert len(out["grid"]) == 2 and all("valid_ndcg_at_10" in g for g in out["grid"])
    assert out["valid_ndcg_at_10"] == max(g["valid_ndcg_at_10"] for g in out["grid"])
    for key in ("test_recall_at_10", "test_recall_at_100", "test_ndcg_at_10", "valid_recall_at_50"):
        assert 0.0 <= out[key] <= 1.0
    lo, hi = out["test_ndcg_at_10_ci"]
    assert lo <= hi
    with pytest.raises(ValueError):
        tune_ials(tiny, [])


def test_tune_ials_tolerates_held_out_items_unknown_to_train(tiny):
    inter = tiny.interactions.copy()
    held_out = inter.index[inter["split"] != "train"][::3]
    inter.loc[held_out, "item_idx"] = -1  # as prepare() marks items not in train
    out = tune_ials(
        replace(tiny, interactions=inter),
        [{"factors": 2, "regularization": 1.0, "iterations": 5, "alpha": 1.0}],
    )
    assert 0.0 <= out["test_recall_at_10"] <= 1.0
