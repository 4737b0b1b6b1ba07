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

from datetime import date, timedelta

import numpy as np
import pandas as pd

from recsys.config import DataConfig
from recsys.data.prepared import SPLITS, Prepared, assemble
from recsys.data.stream import day_start, last_day
from recsys.errors import DataError


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


def test_days(ratings: pd.DataFrame, cut: date) -> int:
    """Days from ``cut`` to the end of the last rating's day (the test period's length; the
    default validation window is as long); ValueError for a cut after the data."""
    days = (last_day(ratings) + timedelta(days=1) - cut).days
    if days < 1:
        raise ValueError(f"the cut {cut} is after the last rating ({last_day(ratings)})")
    return days


def split_at(positives: pd.DataFrame, cut: date, valid_days: int, cfg: DataConfig) -> pd.DataFrame:
    """The positives labelled train / valid / test around ``cut`` (module docstring), the cold-start
    filter counted over the train period; held-out rows of users unknown then are left out."""
    if valid_days < 1:
        raise ValueError(f"valid_days must be >= 1, got {valid_days}")
    valid_from, test_from = day_start(cut - timedelta(days=valid_days)), day_start(cut)
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
    before = ratings[ratings["timestamp"] < day_start(cut)]  # nothing after the cut is activity
    return assemble(labelled, movies, before, cfg, protocol="time-split", cut=cut.isoformat(),
                    valid_days=valid_days)  # fmt: skip


def open_catalogue(prepared: Prepared, movies: pd.DataFrame, ratings: pd.DataFrame) -> Prepared:
    """``prepared`` scored against the catalogue as of the evaluation: the trained movies (item_idx
    0..N-1, unchanged) then every other movie of ``movies`` with a rating in ``ratings`` (N.., in
    movie_id order, ``train_count`` 0), the held-out rows of those movies re-indexed to them.

    Only a model that embeds movies from their features can rank the new ones (the content item
    tower); the same rows, in the same order, stay misses for every other model.
    """
    trained = prepared.catalogue
    rated = set(ratings["movie_id"].unique().tolist())
    extra = movies[movies["movie_id"].isin(rated) & ~movies["movie_id"].isin(trained["movie_id"])]
    extra = extra.sort_values("movie_id", kind="mergesort").reset_index(drop=True)
    extra = extra.assign(item_idx=np.arange(len(trained), len(trained) + len(extra)), train_count=0)
    catalogue = pd.concat([trained, extra[[c for c in trained.columns if c in extra]]], ignore_index=True)
    catalogue["genres"] = catalogue["genres"].fillna("(no genres listed)")
    if "tags" in catalogue:
        catalogue["tags"] = catalogue["tags"].fillna("").astype(str)
    index = dict(zip(extra["movie_id"].tolist(), extra["item_idx"].tolist()))
    inter = prepared.interactions.copy()
    unknown = inter["item_idx"] < 0
    inter.loc[unknown, "item_idx"] = inter.loc[unknown, "movie_id"].map(index).fillna(-1).astype(np.int64)
    meta = {**prepared.meta, "n_open_items": len(catalogue)}
    return Prepared(inter, catalogue, prepared.users, prepared.activity, meta, prepared.tail)


def new_movie_mask(heldout: pd.DataFrame) -> np.ndarray:
    """Per held-out row: True for a positive of a new movie (outside the trained catalogue)."""
    return heldout["item_idx"].to_numpy() < 0
