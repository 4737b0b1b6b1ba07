"""The time-split protocol: one global cut in time instead of each user's last positives.

Leave-last-out (recsys.data.prepared, DESIGN.md) holds out each user's last positives, with the
cold-start filter counted over all positives: a movie that only became popular at the end of the
data is in the catalogue, so no held-out positive is for a movie the model could not know. A
nightly recommender lives the other way round: it is trained on everything before a night and
judged on what people liked after it, new movies included. This module prepares that:

- **train**: the positives before ``cut - valid_days``, with the cold-start filter counted over
  them only (users and movies as known at training time);
- **valid**: the positives in ``[cut - valid_days, cut)``, for choosing models (the last period
  before the cut, as the test period follows it);
- **test**: the positives from ``cut`` on.

Every held-out positive of a user known at training time is kept, one row each. A positive for a
movie outside the trained catalogue (fewer than ``min_item_interactions`` training positives, or
none: a *new* movie) keeps ``item_idx == -1``: a model that cannot place it ranks it as a miss, as
it would in production. :func:`new_movie_mask` tells those rows apart for the new/known columns.

The result is a :class:`~recsys.data.prepared.Prepared` like leave-last-out's, so every trainer
and evaluator (recsys.data.views.SplitView: history and seen set = the positives before the split)
runs on it unchanged.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

from recsys.config import DataConfig
from recsys.data.prepared import SPLITS, Prepared, index_splits
from recsys.data.stream import last_day
from recsys.errors import DataError

log = logging.getLogger(__name__)


def cut_of(ratings: pd.DataFrame, cut: date | None = None, last_days: int | None = None) -> date:
    """The cut: ``cut`` as given, or the day ``last_days`` before the day after the last rating."""
    if (cut is None) == (last_days is None):
        raise ValueError("give exactly one of cut and last_days")
    if cut is not None:
        return cut
    assert last_days is not None
    if last_days < 1:
        raise ValueError(f"last_days must be >= 1, got {last_days}")
    return last_day(ratings) + timedelta(days=1) - timedelta(days=last_days)


def _epoch(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def split_at(positives: pd.DataFrame, cut: date, valid_days: int, cfg: DataConfig) -> pd.DataFrame:
    """The positives labelled train / valid / test around ``cut`` (module docstring), the cold-start
    filter counted over the train period; held-out rows of users unknown then are left out."""
    if valid_days < 1:
        raise ValueError(f"valid_days must be >= 1, got {valid_days}")
    valid_from, test_from = _epoch(cut - timedelta(days=valid_days)), _epoch(cut)
    stamp = positives["timestamp"]
    split = np.where(stamp < valid_from, "train", np.where(stamp < test_from, "valid", "test"))
    frame = positives.assign(split=split)
    train = frame[frame["split"] == "train"]
    user_n = train.groupby("user_id").size()
    item_n = train.groupby("movie_id").size()
    users = set(user_n.index[user_n >= cfg.min_user_interactions])
    items = set(item_n.index[item_n >= cfg.min_item_interactions])
    in_train = (frame["split"] == "train") & frame["user_id"].isin(users) & frame["movie_id"].isin(items)
    heldout = (frame["split"] != "train") & frame["user_id"].isin(users)
    return frame[in_train | heldout].reset_index(drop=True)


def prepare_time_split(
    ratings: pd.DataFrame, movies: pd.DataFrame, cfg: DataConfig, cut: date, valid_days: int
) -> Prepared:
    """The time-split protocol's prepared data (module docstring); DataError when a period is empty."""
    positives = ratings[ratings["rating"] >= cfg.rating_threshold]
    labelled = split_at(positives, cut, valid_days, cfg)
    counts = labelled["split"].value_counts()
    empty = [s for s in SPLITS if not counts.get(s, 0)]
    if empty:
        raise DataError(
            f"the time split at {cut} (validation {valid_days} days before it) leaves no {empty[0]} "
            "positives: choose another cut"
        )
    interactions, users, items = index_splits(labelled)
    train = interactions[interactions["split"] == "train"]
    counts_by_item = train.groupby("item_idx").size().rename("train_count").reset_index()
    catalogue = items.merge(movies, on="movie_id", how="left").merge(counts_by_item, on="item_idx")
    catalogue["title"] = catalogue["title"].fillna(catalogue["movie_id"].map("movie {}".format))
    catalogue["genres"] = catalogue["genres"].fillna("(no genres listed)")
    before = ratings[ratings["timestamp"] < _epoch(cut)]
    activity = before.sort_values(["user_id", "timestamp", "movie_id"], kind="mergesort")
    unknown = interactions["item_idx"] < 0
    meta = {
        "protocol": "time-split",
        "cut": cut.isoformat(),
        "valid_days": valid_days,
        "n_users": len(users),
        "n_items": len(items),
        **{f"n_{s}": int((interactions["split"] == s).sum()) for s in SPLITS},
        **{f"n_{s}_unknown_items": int((unknown & (interactions["split"] == s)).sum()) for s in SPLITS[1:]},
        "n_activity_users": int(before["user_id"].nunique()),
        "n_activity_ratings": len(before),
        "settings": cfg.model_dump(mode="json", exclude={"source"}),
    }
    log.info("time split at %s: %s", cut, {k: v for k, v in meta.items() if k != "settings"})
    return Prepared(interactions, catalogue, users, activity.reset_index(drop=True), meta)


def new_movie_mask(heldout: pd.DataFrame) -> np.ndarray:
    """Per held-out row: True for a positive of a new movie (outside the trained catalogue)."""
    return heldout["item_idx"].to_numpy() < 0
