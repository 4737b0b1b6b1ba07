"""The baselines every model is compared with, on the same split: MostPop (train counts) and EASE
(Steck 2019, a closed-form item-item model); iALS lives in recsys.evaluation.ials (it needs the
``implicit`` package, a development dependency)."""

from __future__ import annotations

import numpy as np
import pandas as pd


class MostPop:
    """The seed's baseline: every user gets items ordered by train popularity."""

    def __init__(self, train_counts: np.ndarray) -> None:
        self.scores = np.asarray(train_counts, dtype=np.float64)

    def __call__(self, user_idx: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.scores, (len(user_idx), len(self.scores)))


class EASE:
    """EASE (Steck 2019), a closed-form item-item baseline: B = I - P / diag(P), P = (X'X + lambda I)^-1.

    ``train_pairs`` (user_idx, item_idx) fit B; ``history_pairs`` are the rows users are scored from
    (train for validation, train + valid for test), so scores [B, N] = X_history[users] @ B.
    """

    def __init__(
        self,
        train_pairs: pd.DataFrame,
        history_pairs: pd.DataFrame,
        n_users: int,
        n_items: int,
        l2: float = 300.0,
    ) -> None:
        self.weights = ease_weights(train_pairs, n_users, n_items, l2)
        self.history = _binary_matrix(history_pairs, n_users, n_items)

    def __call__(self, user_idx: np.ndarray) -> np.ndarray:
        return self.history[user_idx] @ self.weights


def ease_weights(train_pairs: pd.DataFrame, n_users: int, n_items: int, l2: float) -> np.ndarray:
    """EASE's item-item matrix B [N, N] (zero diagonal) fit on (user_idx, item_idx) rows."""
    if l2 <= 0:
        raise ValueError(f"l2 must be > 0, got {l2}")
    x = _binary_matrix(train_pairs, n_users, n_items)
    p = np.linalg.inv(x.T @ x + l2 * np.eye(n_items))
    weights = -p / np.diag(p)
    np.fill_diagonal(weights, 0.0)
    return weights


def _binary_matrix(pairs: pd.DataFrame, n_users: int, n_items: int) -> np.ndarray:
    """Dense 0/1 matrix [n_users, n_items] from (user_idx, item_idx) rows (item_idx -1 skipped)."""
    out = np.zeros((n_users, n_items), dtype=np.float64)
    known = pairs["item_idx"].to_numpy() >= 0
    out[pairs["user_idx"].to_numpy()[known], pairs["item_idx"].to_numpy()[known]] = 1.0
    return out
