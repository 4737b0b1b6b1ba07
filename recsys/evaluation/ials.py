"""iALS (implicit-feedback ALS, Hu et al. 2008) baseline on CPU via the ``implicit`` library.

Same calling contract as :class:`recsys.evaluation.baselines.EASE`: fit on ``train_pairs``, score users from
``history_pairs``; :func:`tune_ials` picks hyper-parameters on validation and reports test.
"""

from __future__ import annotations

import logging
from itertools import product

import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from recsys.data.views import SplitView
from recsys.evaluation.metrics import (
    bootstrap_interval,
    evaluate_ranks,
    metrics_from_ranks,
    ndcg_at_k,
    recall_at_k,
)

log = logging.getLogger(__name__)

NUM_THREADS = 2  # implicit's own threads; BLAS is held to 1 around fitting, as implicit advises
DEFAULT_GRID = [
    {"factors": f, "regularization": r, "iterations": 15, "alpha": a}
    for f, r, a in product((128, 256, 512), (10.0, 30.0, 100.0), (3.0, 10.0))
]


class IALS:
    """iALS: fit item factors on train, then solve each user's factors exactly from their history.

    ``train_pairs`` and ``history_pairs`` have int columns user_idx in [0, n_users) and item_idx in
    [0, n_items); rows with item_idx < 0 (held-out items unknown to train) are ignored. The binary
    user x item matrix is weighted by confidence ``alpha``. Scoring users from ``history_pairs``
    (train for validation, train + valid for test) lets a validation positive inform test scores.
    ``__call__(user_idx [B]) -> scores [B, n_items]`` (float64).

    Raises ValueError for n_users/n_items/factors/iterations < 1, regularization or alpha <= 0,
    missing columns, indices out of range, or train_pairs without a known item.
    """

    def __init__(
        self,
        train_pairs: pd.DataFrame,
        history_pairs: pd.DataFrame,
        n_users: int,
        n_items: int,
        factors: int = 64,
        regularization: float = 0.05,
        iterations: int = 15,
        alpha: float = 1.0,
        seed: int = 0,
    ) -> None:
        for name, value in (
            ("n_users", n_users),
            ("n_items", n_items),
            ("factors", factors),
            ("iterations", iterations),
        ):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value}")
        if not regularization > 0 or not alpha > 0:
            raise ValueError(f"regularization and alpha must be > 0, got {regularization}, {alpha}")
        self.n_users, self.n_items = int(n_users), int(n_items)
        train = self._matrix(train_pairs, "train_pairs")
        if train.nnz == 0:
            raise ValueError("train_pairs has no row with a known item (item_idx >= 0)")
        history = self._matrix(history_pairs, "history_pairs")
        with threadpool_limits(1, "blas"):
            self.model = AlternatingLeastSquares(
                factors=int(factors),
                regularization=float(regularization),
                alpha=float(alpha),
                iterations=int(iterations),
                num_threads=NUM_THREADS,
                random_state=seed,
            )
            self.model.fit(train, show_progress=False)
            users = self.model.recalculate_user(np.arange(self.n_users), history)
        self.user_factors = np.asarray(users, dtype=np.float64)
        self.item_factors = np.asarray(self.model.item_factors, dtype=np.float64)
        log.debug("iALS fitted: %d users, %d items, %d train pairs", n_users, n_items, train.nnz)

    def __call__(self, user_idx: np.ndarray) -> np.ndarray:
        user_idx = np.asarray(user_idx, dtype=np.int64)
        if len(user_idx) and (user_idx.min() < 0 or user_idx.max() >= self.n_users):
            raise ValueError(f"user_idx must lie in [0, {self.n_users})")
        return self.user_factors[user_idx] @ self.item_factors.T

    def _matrix(self, pairs: pd.DataFrame, name: str) -> sp.csr_matrix:
        """Binary csr [n_users, n_items] from the rows of ``pairs`` whose item is known."""
        if not {"user_idx", "item_idx"} <= set(pairs.columns):
            raise ValueError(f"{name} needs columns user_idx and item_idx, got {list(pairs.columns)}")
        pairs = pairs[pairs["item_idx"] >= 0]
        users, items = pairs["user_idx"].to_numpy(np.int64), pairs["item_idx"].to_numpy(np.int64)
        if len(users) and (users.min() < 0 or users.max() >= self.n_users or items.max() >= self.n_items):
            raise ValueError(f"{name} indices exceed [0, {self.n_users}) x [0, {self.n_items})")
        x = sp.csr_matrix(
            (np.ones(len(users), np.float32), (users, items)), shape=(self.n_users, self.n_items)
        )
        x.sum_duplicates()
        x.data[:] = 1.0  # duplicates count once
        return x


def tune_ials(prepared, grid: list[dict] | None = None, seed: int = 0) -> dict:
    """iALS with factors/regularization/iterations/alpha chosen on validation NDCG@10; test reported.

    Validation: fit on train, score from train, exclude train. Test: fit on train, score from
    train + valid, exclude train + valid. Returns the chosen params, ``valid_<metric>``,
    ``test_<metric>``, bootstrap CIs of test NDCG@10 / Recall@10 / Recall@50, ``grid`` (every config tried
    with its ``valid_ndcg_at_10``) and ``test_ranks`` (per held-out test row, for breakdowns).
    """
    grid = DEFAULT_GRID if grid is None else grid
    if not grid:
        raise ValueError("grid must hold at least one configuration")
    valid_view, test_view = SplitView(prepared, "valid"), SplitView(prepared, "test")
    train, before_test = valid_view.before, test_view.before
    n_users, n_items = prepared.n_users, prepared.n_items
    best: dict = {}
    chosen: dict = {}
    tried = []
    for params in grid:
        model = IALS(train, train, n_users, n_items, seed=seed, **params)
        valid = metrics_from_ranks(evaluate_ranks(model, valid_view.heldout, valid_view.seen))
        tried.append({**params, "valid_ndcg_at_10": valid["ndcg_at_10"]})
        log.info("iALS %s: valid NDCG@10 %.4f", params, valid["ndcg_at_10"])
        if not best or valid["ndcg_at_10"] > best["valid_ndcg_at_10"]:
            chosen, best = params, {**params, **{f"valid_{k}": v for k, v in valid.items()}}
    model = IALS(train, before_test, n_users, n_items, seed=seed, **chosen)
    ranks = evaluate_ranks(model, test_view.heldout, test_view.seen)
    best.update({f"test_{k}": v for k, v in metrics_from_ranks(ranks).items()})
    best["test_ndcg_at_10_ci"] = bootstrap_interval(ranks, ndcg_at_k, 10)
    best["test_recall_at_10_ci"] = bootstrap_interval(ranks, recall_at_k, 10)
    best["test_recall_at_50_ci"] = bootstrap_interval(ranks, recall_at_k, 50)
    best["grid"] = tried
    best["test_ranks"] = ranks.tolist()
    return best
