"""The nightly writers of the online store: every user's list, history and the titles, and every
movie's similar movies, into Redis as Feast's Redis store lays them out.

Two writers put the same bytes into Redis: Feast's ``write_to_online_store`` (one protobuf object
per value and row), and the default fast writer, which reads the layout from the registered repo
(recsys.online.feast_repo: the registration record while it is current, else Feast's registry),
encodes whole columns with :mod:`recsys.online.layout` and pipelines the HSETs Feast would send,
several times faster, and without importing Feast on a night the repo is registered as it stands.
The fast writer refuses (StoreError, nothing written) a repo whose online store it does not
reproduce byte for byte, rather than falling back: a silent fallback would hide both the
configuration change and a several-fold slower nightly publish.

Publish frames:
- recs: one row per user - ``user_id`` int64, ``item_ids`` list[int64] (movie ids, best first),
  ``scores`` list[float32] (same length), ``because_ids`` list[int64] (optional: parallel to
  ``item_ids``, the reasons of recsys.runtime.explain, or empty), ``model_version`` str, ``arm``
  str (``champion`` or ``canary``, recsys.runtime.arms; a frame without the column is the
  champion's), ``data_version``
  str (DVC version of the snapshot the list was scored on), ``event_timestamp`` tz-aware UTC (when
  the list was scored; stored again as the feature ``scored_at``, ISO 8601, which Feast returns
  with the list).
- histories (optional): one row per user - ``user_id`` int64, ``movie_ids`` list[int64] (recent
  positive movies, newest last; may be empty), ``data_version`` str, ``event_timestamp`` tz-aware UTC.
- catalogue: ``movie_id`` int64, ``title`` str.
- similar (:func:`publish_similar`): one row per movie - ``movie_id`` int64, ``movie_ids``
  list[int64] (the most similar other movies, best first), ``scores`` list[float32], ``source`` str
  (``collaborative`` or ``content``: the movie embedded from its features alone), ``model_version``
  str (the ``movie_similar`` version), ``data_version`` str (DVC version of the pairwise table it
  was trained on), ``event_timestamp`` tz-aware UTC.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import redis

from recsys.config import Settings
from recsys.errors import DataError, StoreError
from recsys.online import layout, publication
from recsys.online.feast_repo import ViewLayout, feature_store, registered_layouts, view_layout
from recsys.online.layout import (
    CATALOGUE_COLUMNS,
    HISTORY_COLUMNS,
    HISTORY_VIEW,
    MOVIE_KEY,
    MOVIE_VIEW,
    PROJECT,
    RECS_COLUMNS,
    SIMILAR_COLUMNS,
    SIMILAR_VIEW,
    USER_KEY,
    USER_VIEW,
)
from recsys.ops import redis_server
from recsys.runtime.arms import CHAMPION_ARM, Arms

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

log = logging.getLogger(__name__)
BATCH_SIZE = 10_000  # rows per write_to_online_store call or pipelined round trip: bounds memory
Writer = Literal["fast", "feast"]


def _check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{what} frame lacks column(s) {missing}; expected {list(columns)}")


def _write_record(frame: pd.DataFrame, repo: Path, view: str) -> None:
    """Overwrite the view's offline FileSource parquet: the record of what the online store holds."""
    path = repo / "data" / f"{view}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


def _write_online(
    store: FeatureStore, view: str, frame: pd.DataFrame, batch_size: int, done: Callable[[int], None]
) -> int:
    """Feast's own path: ``write_to_online_store`` per ``batch_size`` rows; returns the calls made.
    ``done(rows)`` follows each call."""
    batches = 0
    for start in range(0, len(frame), batch_size):
        chunk = frame.iloc[start : start + batch_size]
        store.write_to_online_store(view, df=chunk)
        done(len(chunk))
        batches += 1
    return batches


def _hash_commands(view: ViewLayout, frame: pd.DataFrame) -> Iterator[tuple[bytes, list[bytes]]]:
    """(key, [field, value, field, value...]) per row of ``frame``: Feast's HSET, encoded by column."""
    import pandas as pd

    keys = layout.entity_keys(view.join_key, frame[view.join_key].to_numpy(), view.project)
    stamps = pd.DatetimeIndex(frame[view.timestamp_field]).as_unit("ns").asi8
    fields = [view.timestamp_key, *(field for _, field, _ in view.features)]
    columns = [layout.timestamp_values(stamps)]
    columns += [layout.ENCODERS[kind](frame[column].tolist()) for column, _, kind in view.features]
    for key, *values in zip(keys, *columns):
        yield key, [item for pair in zip(fields, values) for item in pair]


def _write_fast(
    conn: redis.Redis, view: ViewLayout, frame: pd.DataFrame, rows: int, done: Callable[[int], None]
) -> int:
    """Write ``frame`` as Feast would, ``rows`` HSETs per pipelined round trip; returns the trips.
    ``done(rows)`` follows each round trip."""
    batches = 0
    for start in range(0, len(frame), rows):
        chunk = frame.iloc[start : start + rows]
        with conn.pipeline(transaction=False) as pipe:
            for key, pairs in _hash_commands(view, chunk):
                pipe.execute_command("HSET", key, *pairs)
                if view.ttl_seconds:
                    pipe.expire(key, view.ttl_seconds)
            pipe.execute()
        done(len(chunk))
        batches += 1
    return batches


def _versions(frame: pd.DataFrame, column: str) -> str:
    """The frame's one value of ``column`` (comma-joined if several)."""
    return ",".join(sorted(frame[column].astype(str).unique()))


def _prepare(recs: pd.DataFrame, catalogue: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Typed copies of the frames; titles carry the run's timestamp so a re-publish is identical."""
    import numpy as np
    import pandas as pd

    if "arm" not in recs.columns:
        recs = recs.assign(arm=CHAMPION_ARM)
    if "because_ids" not in recs.columns:  # lists without reasons
        recs = recs.assign(because_ids=[np.empty(0, dtype=np.int64)] * len(recs))
    _check_columns(recs, [c for c in RECS_COLUMNS if c != "scored_at"], "recommendations")
    _check_columns(catalogue, CATALOGUE_COLUMNS, "catalogue")
    if recs[USER_KEY].duplicated().any():
        raise DataError("recommendations frame has duplicate user_id rows; one list per user")
    stamp = pd.to_datetime(recs["event_timestamp"], utc=True)
    users = recs.assign(scored_at=scored_at(stamp))[list(RECS_COLUMNS)].assign(
        user_id=recs[USER_KEY].astype("int64"),
        item_ids=[np.asarray(items, dtype=np.int64) for items in recs["item_ids"]],
        scores=[np.asarray(scores, dtype=np.float32) for scores in recs["scores"]],
        because_ids=[np.asarray(why, dtype=np.int64) for why in recs["because_ids"]],
        model_version=recs["model_version"].astype(str),
        arm=recs["arm"].astype(str),
        data_version=recs["data_version"].astype(str),
        event_timestamp=stamp,
    )
    run_time = stamp.max() if len(stamp) else pd.Timestamp.now(tz="UTC")
    movies = catalogue[list(CATALOGUE_COLUMNS)].astype({MOVIE_KEY: "int64", "title": str})
    return users, movies.assign(event_timestamp=run_time)


def scored_at(stamps: pd.Series) -> list[str]:
    """Feature ``scored_at`` of each list: its event timestamp (when it was scored), ISO 8601 UTC."""
    return [stamp.isoformat(timespec="seconds") for stamp in stamps.dt.tz_convert("UTC")]


def _int64_array(user_id: Any, values: Any) -> Any:
    """One history as a 1-D int64 array; DataError naming the user when it is not a list of ids."""
    import numpy as np

    try:
        array = np.asarray(values, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"histories frame: movie_ids of user {user_id} is not a list of ints: {exc}") from exc
    if array.ndim != 1:
        raise DataError(f"histories frame: movie_ids of user {user_id} must be a flat list, got {values!r}")
    return array


def _prepare_histories(histories: pd.DataFrame) -> pd.DataFrame:
    """Typed copy of the histories frame (shape in the module docstring); DataError names the problem."""
    import pandas as pd

    _check_columns(histories, HISTORY_COLUMNS, "histories")
    duplicated = histories[USER_KEY][histories[USER_KEY].duplicated()]
    if len(duplicated):
        first = duplicated.iat[0]
        raise DataError(f"histories frame has duplicate user_id rows (e.g. user {first}); one per user")
    return histories[list(HISTORY_COLUMNS)].assign(
        user_id=histories[USER_KEY].astype("int64"),
        movie_ids=[_int64_array(u, ids) for u, ids in zip(histories[USER_KEY], histories["movie_ids"])],
        data_version=histories["data_version"].astype(str),
        event_timestamp=pd.to_datetime(histories["event_timestamp"], utc=True),
    )


def _layouts(settings: Settings, views: Sequence[str]) -> tuple[dict[str, ViewLayout], str]:
    """The fast writer's layout of each view and the Redis it writes to: from the registration
    record when it covers every view (no Feast import), else from Feast's registry (which raises
    StoreError naming what the fast writer does not implement)."""
    registered = registered_layouts(settings)
    if all(view in registered for view in views):
        return {view: registered[view] for view in views}, settings.redis_connection
    store = feature_store(settings)
    return {view: view_layout(store, view) for view in views}, store.config.online_store.connection_string


@contextmanager
def _online_writer(
    views: Sequence[str],
    writer: Writer,
    batch_size: int,
    settings: Settings,
    done: Callable[[int], None],
) -> Iterator[Callable[[str, pd.DataFrame], int]]:
    """``write(view, frame) -> round trips`` of ``writer``; every layout is checked before any write.

    ``done(rows)`` follows every round trip. Redis failures while writing become StoreError.
    """
    if writer not in ("fast", "feast"):
        raise StoreError(f"writer must be 'fast' or 'feast', got {writer!r}")
    store = feature_store(settings) if writer == "feast" else None
    layouts, connection = _layouts(settings, views) if writer == "fast" else ({}, "")
    conn = redis_server.client(connection) if layouts else None

    def write(view: str, frame: pd.DataFrame) -> int:
        if store is not None:
            return _write_online(store, view, frame, batch_size, done)
        assert conn is not None
        return _write_fast(conn, layouts[view], frame, batch_size, done)

    try:
        yield write
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise redis_server.unreachable(settings, exc) from exc
    finally:
        if conn is not None:
            conn.close()


def _frames(
    recs: pd.DataFrame, catalogue: pd.DataFrame, histories: pd.DataFrame | None
) -> dict[str, pd.DataFrame]:
    """Typed copies of the publish frames, by view (DataError names a malformed one)."""
    users, movies = _prepare(recs, catalogue)
    frames = {USER_VIEW: users, MOVIE_VIEW: movies}
    if histories is not None:
        frames[HISTORY_VIEW] = _prepare_histories(histories)
    return frames


def _write_publication(
    frames: dict[str, pd.DataFrame],
    settings: Settings,
    writer: Writer,
    batch_size: int,
    served_users: Sequence[int] | None,
    arms: Arms | None = None,
) -> tuple[int, float, int]:
    """Write every frame under a publication record; (round trips, online seconds, stale users
    removed). ``served_users``: every user the publication serves (default: those in the frames)."""
    import numpy as np

    users = frames[USER_VIEW]
    batches, online, total, written = 0, 0.0, sum(len(f) for f in frames.values()), [0]
    record = redis_server.client(settings.redis_connection)

    def done(rows: int) -> None:
        written[0] += rows
        publication.progress(record, written[0], total)

    try:
        with _online_writer(list(frames), writer, batch_size, settings, done) as write:
            publication.begin(
                record, _versions(users, "model_version"), _versions(users, "data_version"), total, arms
            )
            for view, frame in frames.items():
                _write_record(frame, settings.paths.feature_repo, view)
                writing = time.perf_counter()
                batches += write(view, frame)
                online += time.perf_counter() - writing
            stale = publication.finish(
                record,
                users[USER_KEY].tolist() if served_users is None else served_users,
                lambda u: layout.entity_keys(USER_KEY, np.array([u]), PROJECT)[0],
                remove_stale=settings.store.stale_users == "remove",
                arms=arms,
            )
    finally:
        record.close()
    return batches, online, stale


def publish(
    recs: pd.DataFrame,
    catalogue: pd.DataFrame,
    settings: Settings,
    histories: pd.DataFrame | None = None,
    batch_size: int = BATCH_SIZE,
    writer: Writer = "fast",
    served_users: Sequence[int] | None = None,
    arms: Arms | None = None,
) -> dict[str, Any]:
    """Write every user's list, every title and (when given) every user's history to the online store.

    ``arms``: the versions the lists come from (recsys.online.publication's arms record: from the
    end of this publish on, readers serve only lists of these versions); None leaves the record.

    ``served_users``: when ``recs`` holds only the users a night re-scored, every user the
    publication serves (the others keep the lists already in the store); users of the last
    publication outside it are stale.

    Shapes in the module docstring. ``writer="fast"`` encodes whole columns and pipelines the
    HSETs Feast's Redis store would send (same keys, fields and bytes; see :func:`view_layout`);
    ``writer="feast"`` calls Feast's ``write_to_online_store`` per ``batch_size`` rows. Last write
    wins (``skip_dedup`` in feature_store.yaml), so publishing the same frames twice leaves the same
    data, and a publish killed at any point converges when run again. The publication record
    (recsys.online.publication) says a publish is under way until the last write; then users of the last
    publication missing from ``recs`` are removed (``store.stale_users``). Returns counts ("users",
    "movies", "histories": 0 without histories, "batches": round trips or Feast calls,
    "stale_users_removed"), "writer", "seconds" (all of it) and "online_seconds" (the online writes).
    Raises DataError for malformed frames, StoreError when Redis is unreachable or the fast writer
    does not implement the repo's online store settings (nothing is written then).
    """
    frames = _frames(recs, catalogue, histories)
    redis_server.require(settings)
    started = time.perf_counter()
    batches, online, stale = _write_publication(frames, settings, writer, batch_size, served_users, arms)
    seconds = time.perf_counter() - started
    counts = {
        "users": len(frames[USER_VIEW]),
        "movies": len(frames[MOVIE_VIEW]),
        "histories": len(frames.get(HISTORY_VIEW, ())),
    }
    log.info("published %s in %.1fs (%.1fs online, %s writer)", counts, seconds, online, writer)
    return {
        **counts,
        "batches": batches,
        "stale_users_removed": stale,
        "writer": writer,
        "seconds": round(seconds, 3),
        "online_seconds": round(online, 3),
    }


def publish_similar(
    lists: pd.DataFrame, settings: Settings, batch_size: int = BATCH_SIZE, writer: Writer = "fast"
) -> dict[str, Any]:
    """Write every movie's similar movies (view ``movie_similar``; frame in the module docstring).

    Last write wins, as for the user lists; a movie that drops out of the catalogue keeps its last
    list until it is overwritten. Returns counts, round trips, writer and seconds. Raises DataError
    for a malformed frame, StoreError when Redis is unreachable.
    """
    import numpy as np
    import pandas as pd

    _check_columns(lists, SIMILAR_COLUMNS, "similar movies")
    if lists[MOVIE_KEY].duplicated().any():
        raise DataError("similar-movies frame has duplicate movie_id rows; one list per movie")
    frame = lists[list(SIMILAR_COLUMNS)].assign(
        movie_id=lists[MOVIE_KEY].astype("int64"),
        movie_ids=[np.asarray(items, dtype=np.int64) for items in lists["movie_ids"]],
        scores=[np.asarray(scores, dtype=np.float32) for scores in lists["scores"]],
        source=lists["source"].astype(str),
        model_version=lists["model_version"].astype(str),
        data_version=lists["data_version"].astype(str),
        event_timestamp=pd.to_datetime(lists["event_timestamp"], utc=True),
    )
    redis_server.require(settings)
    started = time.perf_counter()
    with _online_writer([SIMILAR_VIEW], writer, batch_size, settings, lambda rows: None) as write:
        _write_record(frame, settings.paths.feature_repo, SIMILAR_VIEW)
        batches = write(SIMILAR_VIEW, frame)
    seconds = time.perf_counter() - started
    log.info("published the similar movies of %d movies in %.1fs (%s writer)", len(frame), seconds, writer)
    return {"movies": len(frame), "batches": batches, "writer": writer, "seconds": round(seconds, 3)}
