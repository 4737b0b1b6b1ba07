"""Feast online store I/O: register the repo, publish nightly lists and titles, read them back.

With :mod:`recsys.redis_server` this is the only module that touches Feast or Redis writes.
``import feast`` costs 7-8 s (it pulls in torch and cloud SDKs), and :mod:`recsys.lookup` imports
the names below, so feast and pandas are imported inside the functions that need them.

Publish frames:
- recs: one row per user - ``user_id`` int64, ``item_ids`` list[int64] (movie ids, best first),
  ``scores`` list[float32] (same length), ``model_version`` str, ``event_timestamp`` tz-aware UTC.
- catalogue: ``movie_id`` int64, ``title`` str.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from recsys import redis_server
from recsys.config import Settings
from recsys.errors import DataError, StoreError

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

log = logging.getLogger(__name__)

# Names shared with feature_repo/ (the integration tests apply the repo and write through these).
PROJECT = "recsys"
USER_KEY = "user_id"
MOVIE_KEY = "movie_id"
USER_VIEW = "user_recommendations"
MOVIE_VIEW = "movie"
FEATURE_SERVICE = "recommendations_v1"
USER_FEATURES = ("item_ids", "scores", "model_version")
MOVIE_FEATURES = ("title",)
REPO_MODULES = ("entities", "data_sources", "feature_views", "feature_services")
RECS_COLUMNS = (USER_KEY, *USER_FEATURES, "event_timestamp")
CATALOGUE_COLUMNS = (MOVIE_KEY, "title")
BATCH_SIZE = 10_000  # rows per write_to_online_store call: bounds the proto rows held in memory


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """Set one environment variable for the block and restore it, so it never leaks into settings."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def feature_store(settings: Settings) -> FeatureStore:
    """Build the FeatureStore of ``paths.feature_repo`` pointed at ``store.connection_string``.

    feature_store.yaml reads ``${REDIS_CONNECTION_STRING}``, which Feast expands (os.path.expandvars,
    no default syntax) while the config is loaded here. Raises StoreError when the repo is missing.
    """
    repo = settings.paths.feature_repo
    if not (repo / "feature_store.yaml").is_file():
        raise StoreError(f"no feature_store.yaml in {repo}; set paths.feature_repo to the Feast repo")
    from feast import FeatureStore

    with _environment("REDIS_CONNECTION_STRING", settings.store.connection_string or ""):
        return FeatureStore(repo_path=str(repo))


def repo_objects(repo: Path) -> list[Any]:
    """Import the repo's definition modules (as `feast apply` would) and return their Feast objects."""
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    sys.path.insert(0, str(repo))
    try:
        for name in REPO_MODULES:  # generic names like "entities": never reuse another repo's copy
            sys.modules.pop(name, None)
        modules = [importlib.import_module(name) for name in REPO_MODULES]
    finally:
        sys.path.remove(str(repo))
        for name in REPO_MODULES:
            sys.modules.pop(name, None)
    kinds = (DataSource, Entity, FeatureView, FeatureService)
    found: dict[int, Any] = {}
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, kinds):
                found.setdefault(id(value), value)
    return list(found.values())


def apply(settings: Settings) -> list[str]:
    """Register the repo's objects in the registry (`feast apply`), deleting views/services it dropped.

    Returns the names applied. Raises StoreError when Redis is unreachable.
    """
    redis_server.require(settings)
    store = feature_store(settings)
    objects = repo_objects(settings.paths.feature_repo)
    names = {obj.name for obj in objects}
    stale: list[Any] = [fv for fv in store.list_feature_views() if fv.name not in names]
    stale += [fs for fs in store.list_feature_services() if fs.name not in names]
    store.apply(objects, objects_to_delete=stale, partial=False)
    log.info("applied %d Feast objects to project %s (%d stale removed)", len(objects), PROJECT, len(stale))
    return sorted(names)


def _check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{what} frame lacks column(s) {missing}; expected {list(columns)}")


def _write_record(frame: pd.DataFrame, repo: Path, view: str) -> None:
    """Overwrite the view's offline FileSource parquet: the record of what the online store holds."""
    path = repo / "data" / f"{view}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


def _write_online(store: FeatureStore, view: str, frame: pd.DataFrame, batch_size: int) -> int:
    batches = 0
    for start in range(0, len(frame), batch_size):
        store.write_to_online_store(view, df=frame.iloc[start : start + batch_size])
        batches += 1
    return batches


def _prepare(recs: pd.DataFrame, catalogue: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Typed copies of the frames; titles carry the run's timestamp so a re-publish is identical."""
    import numpy as np
    import pandas as pd

    _check_columns(recs, RECS_COLUMNS, "recommendations")
    _check_columns(catalogue, CATALOGUE_COLUMNS, "catalogue")
    if recs[USER_KEY].duplicated().any():
        raise DataError("recommendations frame has duplicate user_id rows; one list per user")
    stamp = pd.to_datetime(recs["event_timestamp"], utc=True)
    users = recs[list(RECS_COLUMNS)].assign(
        user_id=recs[USER_KEY].astype("int64"),
        item_ids=[np.asarray(items, dtype=np.int64) for items in recs["item_ids"]],
        scores=[np.asarray(scores, dtype=np.float32) for scores in recs["scores"]],
        model_version=recs["model_version"].astype(str),
        event_timestamp=stamp,
    )
    run_time = stamp.max() if len(stamp) else pd.Timestamp.now(tz="UTC")
    movies = catalogue[list(CATALOGUE_COLUMNS)].astype({MOVIE_KEY: "int64", "title": str})
    return users, movies.assign(event_timestamp=run_time)


def publish(
    recs: pd.DataFrame, catalogue: pd.DataFrame, settings: Settings, batch_size: int = BATCH_SIZE
) -> dict[str, Any]:
    """Write every user's list and every title into the online store through Feast.

    Shapes in the module docstring. Last write wins (``skip_dedup`` in feature_store.yaml), so
    publishing the same frames twice leaves the same data. Returns counts and timing.
    Raises DataError for malformed frames, StoreError when Redis is unreachable.
    """
    users, movies = _prepare(recs, catalogue)
    redis_server.require(settings)
    started = time.perf_counter()
    store = feature_store(settings)
    repo = settings.paths.feature_repo
    _write_record(users, repo, USER_VIEW)
    _write_record(movies, repo, MOVIE_VIEW)
    batches = _write_online(store, USER_VIEW, users, batch_size)
    batches += _write_online(store, MOVIE_VIEW, movies, batch_size)
    seconds = time.perf_counter() - started
    log.info("published %d lists and %d titles in %.1fs", len(users), len(movies), seconds)
    return {"users": len(users), "movies": len(movies), "batches": batches, "seconds": round(seconds, 3)}


def read_lists(user_ids: Sequence[int], settings: Settings) -> pd.DataFrame:
    """Read users' lists through Feast ``get_online_features`` (feature service recommendations_v1).

    Returns one row per requested id, in order: user_id, item_ids, scores, model_version
    (None for users without a list). Raises StoreError when Redis is unreachable.
    """
    redis_server.require(settings)
    store = feature_store(settings)
    service = store.get_feature_service(FEATURE_SERVICE)
    rows = [{USER_KEY: int(u)} for u in user_ids]
    frame = store.get_online_features(features=service, entity_rows=rows).to_df()
    return frame[[USER_KEY, *USER_FEATURES]]


def _mismatch(expected: Any, got: Any) -> str | None:
    """Name of the first field that differs between a written row and a read-back row."""
    import numpy as np

    if got["item_ids"] is None or list(got["item_ids"]) != [int(i) for i in expected["item_ids"]]:
        return "item_ids"
    want = np.asarray(expected["scores"], dtype=np.float32)
    have = np.asarray(got["scores"], dtype=np.float32)
    if want.shape != have.shape or not np.array_equal(want, have):
        return "scores"
    if got["model_version"] != str(expected["model_version"]):
        return "model_version"
    return None


def verify(recs: pd.DataFrame, settings: Settings, sample: int) -> dict[str, int]:
    """Read ``sample`` users of ``recs`` back through Feast and compare with what was written.

    The sample is fixed (random_state 0) so a failure reproduces. Returns {"checked", "mismatches"}.
    Raises StoreError naming the first user and field that differ.
    """
    if sample <= 0 or recs.empty:
        return {"checked": 0, "mismatches": 0}
    chosen = recs.sample(n=min(sample, len(recs)), random_state=0)
    read = read_lists(chosen[USER_KEY].tolist(), settings)
    bad = []
    for (_, want), (_, got) in zip(chosen.iterrows(), read.iterrows()):
        field = _mismatch(want, got)
        if field:
            bad.append((int(want[USER_KEY]), field))
    if bad:
        user_id, field = bad[0]
        raise StoreError(
            f"online store differs from the published lists for {len(bad)} of {len(chosen)} sampled users "
            f"(first: user {user_id}, field {field}); re-run publish"
        )
    return {"checked": len(chosen), "mismatches": 0}
