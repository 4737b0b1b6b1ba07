"""Batch scoring with ONNX Runtime: every user's top-K list over the whole catalogue.

Inputs come from TODAY's data, not from the model version: each user's history (most recent
positives, time order) and seen set (everything rated, whatever the rating) are built from the
latest prepared ``activity`` and mapped into the model's item index (movies unknown to the model are
skipped). A user with a usable history (history towers) or a training-time index (id tower) gets a
personalised list; anyone else with ratings gets the popular list minus what they rated.

Output (the recommendations data product, one row per user): ``user_id`` int64, ``item_ids``
list[int64] (MovieLens movie ids, best first), ``scores`` list[float32], ``because_ids``
list[int64] (parallel to ``item_ids``: the movie of the user's history that explains each one,
recsys.runtime.explain; 0 for none, as in a popular list; empty when reasons are off),
``source`` str ("model" or "popular"), ``history`` list[int64] (the user's last 2 x H positive
movie ids, newest last), ``model_version`` str, ``data_version`` str, ``event_timestamp`` UTC
timestamp.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recsys.data.prepared import left_pad
from recsys.data.views import user_bounds
from recsys.errors import DataError
from recsys.files import read_parquet, write_parquet
from recsys.runtime.explain import NONE, because
from recsys.runtime.two_tower import ModelBundle

log = logging.getLogger(__name__)
ACTIVITY_COLUMNS = ["user_id", "movie_id", "rating", "timestamp"]
# The stored recent history holds the last 2 x H positives, so the HTTP endpoint can rebuild the
# model's H-item history after skipping movies the model does not know.
RECENT_FACTOR = 2


@dataclass
class UserInputs:
    """What the graph reads per user, in the model's item index."""

    user_ids: np.ndarray  # [U] int64
    user: np.ndarray  # history [U, H] (pad n_items) or training-time user_idx [U] (-1: unknown)
    seen: list[np.ndarray]  # per user: item_idx of every rated movie the model knows
    recent: list[np.ndarray]  # per user: last 2 x H positive movie ids, newest last
    personal: np.ndarray  # [U] bool: the model can score this user


def _inputs(
    bundle: ModelBundle,
    user_ids: np.ndarray,
    seen: list[np.ndarray],
    history: list[np.ndarray],
    recent: list[np.ndarray],
) -> UserInputs:
    if bundle.reads_history:
        user = left_pad(history, bundle.history_length, bundle.n_items)
        personal = np.array([len(h) > 0 for h in history], dtype=bool)
    else:
        user = bundle.user_index(user_ids)
        personal = user >= 0
    return UserInputs(np.asarray(user_ids, dtype=np.int64), user, seen, recent, personal)


def user_inputs(
    activity: pd.DataFrame, bundle: ModelBundle, user_ids: np.ndarray | None = None
) -> UserInputs:
    """Inputs of every user in ``activity`` (or of ``user_ids`` among them), ascending user_id.

    ``activity``: every rating (user_id, movie_id, rating, timestamp). Positives are ratings >=
    the model's rating threshold. Raises DataError when a column is missing.
    """
    missing = [c for c in ACTIVITY_COLUMNS if c not in activity.columns]
    if missing:
        raise DataError(f"activity frame lacks column(s) {missing}; expected {ACTIVITY_COLUMNS}")
    if user_ids is not None:
        activity = activity[activity["user_id"].isin(user_ids)]
    activity = activity.sort_values(["user_id", "timestamp", "movie_id"], kind="mergesort")
    users = activity["user_id"].to_numpy(dtype=np.int64)
    movies = activity["movie_id"].to_numpy(dtype=np.int64)
    items = bundle.item_index(movies)
    positive = activity["rating"].to_numpy() >= bundle.rating_threshold
    ids, dense = np.unique(users, return_inverse=True)
    bounds = user_bounds(dense, len(ids))
    h = bundle.history_length
    seen, history, recent = [], [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        it, pos = items[a:b], positive[a:b]
        seen.append(np.unique(it[it >= 0]))
        history.append(it[pos & (it >= 0)][-h:])  # as in training: H known items
        recent.append(movies[a:b][pos][-RECENT_FACTOR * h :])
    return _inputs(bundle, ids, seen, history, recent)


def without_movies(inputs: UserInputs, bundle: ModelBundle, movie_ids: Iterable[int]) -> UserInputs:
    """``inputs`` with ``movie_ids`` added to every user's seen set, so that no list holds them
    (the takedown list, recsys.online.blocklist); movies the model does not know are ignored."""
    items = bundle.item_index(np.array(sorted(movie_ids), dtype=np.int64))
    items = np.unique(items[items >= 0])
    if not len(items):
        return inputs
    return replace(inputs, seen=[np.union1d(seen, items) for seen in inputs.seen])


def inputs_from_histories(bundle: ModelBundle, user_ids: list[int], histories: list[list[int]]) -> UserInputs:
    """Inputs from stored recent histories (movie ids, newest last); seen = those movies.

    The same rule as :func:`user_inputs` (the last H movies the model knows), applied to the
    stored tail of RECENT_FACTOR x H positives.
    """
    history, seen, recent = [], [], []
    for stored in histories:
        movies = np.asarray(stored, dtype=np.int64)
        items = bundle.item_index(movies)
        known = items[items >= 0]
        history.append(known[-bundle.history_length :])
        seen.append(np.unique(known))
        recent.append(movies)
    return _inputs(bundle, np.asarray(user_ids, dtype=np.int64), seen, history, recent)


def explained_history(bundle: ModelBundle, inputs: UserInputs) -> np.ndarray:
    """The history each user's reasons come from, [U, H] item indices left-padded with n_items:
    what a history tower reads, and for the id tower the same rule applied to the recent positives."""
    if inputs.user.ndim == 2:
        return inputs.user
    known = [items[items >= 0] for items in (bundle.item_index(r) for r in inputs.recent)]
    return left_pad(known, bundle.history_length, bundle.n_items)


Lists = dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]]  # row -> items, scores, because


def _model_lists(
    bundle: ModelBundle, inputs: UserInputs, rows: np.ndarray, batch_size: int, progress: bool, explain: bool
) -> Lists:
    out: Lists = {}
    if inputs.user.ndim == 2:  # history towers: similar lengths together, less padding per batch
        lengths = (inputs.user[rows] != bundle.n_items).sum(axis=1)
        rows = rows[np.argsort(lengths, kind="stable")]
    unit = bundle.unit_item_vectors if explain else None
    reasons_from = explained_history(bundle, inputs) if unit is not None else None
    starts = range(0, len(rows), batch_size)
    lists = bundle.retriever.recommend_batches(inputs.user[rows], [inputs.seen[r] for r in rows], batch_size)
    bar = tqdm(starts, desc="scoring", disable=not progress, leave=False)
    for start, (idx, sc) in zip(bar, lists, strict=True):
        batch = rows[start : start + batch_size]
        why = None if unit is None or reasons_from is None else because(unit, idx, reasons_from[batch])
        for i, (row, items, scores) in enumerate(zip(batch, idx, sc)):
            keep = np.isfinite(scores)
            out[int(row)] = (items[keep], scores[keep], None if why is None else why[i][keep])
    return out


def _because_ids(bundle: ModelBundle, because: np.ndarray | None, n: int, explain: bool) -> np.ndarray:
    """A list's ``because_ids``: movie ids of the reasons (item indices, -1 none), NONE for every
    entry without one, empty when reasons are off."""
    if not explain:
        return np.empty(0, dtype=np.int64)
    if because is None:
        return np.full(n, NONE, dtype=np.int64)
    return np.where(because >= 0, bundle.movie_ids[np.maximum(because, 0)], NONE).astype(np.int64)


def score_users(
    bundle: ModelBundle,
    inputs: UserInputs,
    model_version: str,
    data_version: str,
    batch_size: int = 1024,
    progress: bool = False,
    explain: bool = True,
) -> pd.DataFrame:
    """Every user's top-K list (the frame in the module docstring), in ``inputs`` order; with
    ``explain``, the reason of every recommended movie (recsys.runtime.explain) in ``because_ids``."""
    personal = np.flatnonzero(inputs.personal)
    lists = _model_lists(bundle, inputs, personal, batch_size, progress, explain)
    items_out, scores_out, because_out, sources = [], [], [], []
    for row in range(len(inputs.user_ids)):
        why = None
        if row in lists:
            items, scores, why = lists[row]
            sources.append("model")
        else:
            items, scores = bundle.popular_for(inputs.seen[row], bundle.k)
            sources.append("popular")
        items_out.append(bundle.movie_ids[items].astype(np.int64))
        scores_out.append(np.asarray(scores, dtype=np.float32))
        because_out.append(_because_ids(bundle, why, len(items), explain))
    log.info(
        "scored %d users with model %s on data %s (%d popular)",
        len(inputs.user_ids),
        model_version,
        data_version,
        len(inputs.user_ids) - len(personal),
    )
    return pd.DataFrame(
        {
            "user_id": inputs.user_ids,
            "item_ids": items_out,
            "scores": scores_out,
            "because_ids": because_out,
            "source": sources,
            "history": [np.asarray(r, dtype=np.int64) for r in inputs.recent],
            "model_version": str(model_version),
            "data_version": str(data_version),
            "event_timestamp": pd.Timestamp(datetime.now(UTC)),
        }
    )


def write_recommendations(recs: pd.DataFrame, path: Path) -> Path:
    """Write a recommendations parquet atomically (recsys.files.write_parquet): DataError naming the
    folder when it cannot be written; the file already at ``path`` is then untouched."""
    return write_parquet(recs, path)


def read_activity(folder: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The prepared data's activity (every rating); DataError when it is missing."""
    path = Path(folder) / "activity.parquet"
    if not path.is_file():
        raise DataError(
            f"{path} does not exist: the prepared data predates fresh scoring or is "
            "incomplete; run `recsys ingest` and `recsys prepare` again"
        )
    return read_parquet(path, columns, fix="run `recsys prepare` again")


def read_recommendations(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a recommendations parquet, or some of its ``columns`` (raises DataError if missing)."""
    if not path.is_file():
        raise DataError(f"recommendations {path} do not exist; run `recsys score` first")
    return read_parquet(path, columns, fix="run `recsys score` again")
