"""Views of the prepared data that every evaluator shares, each rule written once.

- :data:`SEEN_BEFORE` / :class:`SplitView`: protocol step 6 - a held-out split is scored with the
  user's positives before it as history and seen set (train for "valid"; train + valid for "test").
  Training, both promotion gates, the baselines and the benchmarks all read it from here.
- :func:`user_bounds` / :func:`group_by_user`: rows sorted by user -> each user's rows, the one
  group-by-user (the nightly scoring's inputs use it too).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from recsys.data.prepared import Prepared

SEEN_BEFORE = {"valid": ("train",), "test": ("train", "valid")}


def user_bounds(users: np.ndarray, n_users: int) -> np.ndarray:
    """Where each user's rows are: user u's rows of ``users`` (user indices in 0..n_users-1, sorted
    ascending) are ``bounds[u]:bounds[u + 1]``, an empty range for a user without rows."""
    return np.searchsorted(users, np.arange(n_users + 1))


def group_by_user(users: np.ndarray, values: np.ndarray, n_users: int) -> list[np.ndarray]:
    """``values`` grouped by ``users`` (as in :func:`user_bounds`; the order within a user is kept):
    one array per user index, empty for a user without rows."""
    bounds = user_bounds(users, n_users)
    return [values[bounds[u] : bounds[u + 1]] for u in range(n_users)]


def seen_lists(pairs: pd.DataFrame, n_users: int) -> list[np.ndarray]:
    """(user_idx, item_idx) pairs -> one sorted, distinct item array per user index 0..n_users-1.

    Rows with item_idx -1 (held-out items unknown to train) are left out.
    """
    pairs = pairs[pairs["item_idx"] >= 0].sort_values(["user_idx", "item_idx"])
    groups = group_by_user(pairs["user_idx"].to_numpy(), pairs["item_idx"].to_numpy(), n_users)
    return [np.unique(items) for items in groups]


@dataclass(frozen=True)
class SplitView:
    """One held-out split of ``prepared`` ("valid" or "test") as every evaluator scores it."""

    prepared: Prepared
    split: str

    def __post_init__(self) -> None:
        if self.split not in SEEN_BEFORE:
            raise ValueError(f"split must be one of {tuple(SEEN_BEFORE)}, got {self.split!r}")

    @cached_property
    def heldout(self) -> pd.DataFrame:
        """The split's rows: one held-out positive per user."""
        return self.prepared.split(self.split)

    @cached_property
    def before(self) -> pd.DataFrame:
        """The positives before the split (with item_idx, -1 for an item unknown to train)."""
        inter = self.prepared.interactions
        return inter[inter["split"].isin(SEEN_BEFORE[self.split])]

    @cached_property
    def seen(self) -> list[np.ndarray]:
        """Per user_idx, the items excluded from ranking: every known item of :attr:`before`."""
        return seen_lists(self.before, self.prepared.n_users)

    def history_pairs(self) -> np.ndarray:
        """(user_idx, item_idx) rows of :attr:`before` with a known item, sorted by user, then time
        (ties by movie_id): the input of every history tower."""
        frame = self.before[self.before["item_idx"] >= 0]
        frame = frame.sort_values(["user_idx", "timestamp", "movie_id"], kind="mergesort")
        return frame[["user_idx", "item_idx"]].to_numpy(dtype=np.int64)
