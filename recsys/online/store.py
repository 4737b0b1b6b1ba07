"""Feast online store I/O: register the repo, publish nightly lists, histories and titles, read them back.

With :mod:`recsys.ops.redis_server` this is the only module that touches Feast or Redis writes.
``import feast`` costs 7-8 s (it pulls in torch and cloud SDKs), and :mod:`recsys.online.reader` imports
the names below, so feast and pandas are imported inside the functions that need them.

Two writers put the same bytes into Redis: Feast's ``write_to_online_store`` (one protobuf object
per value and row), and the default fast writer, which reads the layout from the registered repo
(:func:`view_layout`), encodes whole columns with :mod:`recsys.online.layout` and pipelines the
HSETs Feast would send, several times faster. The fast writer refuses (StoreError, nothing written)
a repo whose online store it does not reproduce byte for byte, rather than falling back: a silent
fallback would hide both the configuration change and a several-fold slower nightly publish.

Publish frames:
- recs: one row per user - ``user_id`` int64, ``item_ids`` list[int64] (movie ids, best first),
  ``scores`` list[float32] (same length), ``model_version`` str, ``data_version`` str (DVC version of
  the prepared data), ``event_timestamp`` tz-aware UTC.
- histories (optional): one row per user - ``user_id`` int64, ``movie_ids`` list[int64] (recent
  positive movies, newest last; may be empty), ``data_version`` str, ``event_timestamp`` tz-aware UTC.
- catalogue: ``movie_id`` int64, ``title`` str.
- similar (:func:`publish_similar`): one row per movie - ``movie_id`` int64, ``movie_ids``
  list[int64] (the most similar other movies, best first), ``scores`` list[float32],
  ``model_version`` str (the ``movie_similar`` version), ``data_version`` str (DVC version of the
  pairwise table it was trained on), ``event_timestamp`` tz-aware UTC.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import redis

from recsys.config import Settings
from recsys.errors import DataError, StoreError
from recsys.online import layout as feast_layout
from recsys.online import publication
from recsys.ops import redis_server

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
HISTORY_VIEW = "user_history"
SIMILAR_VIEW = "movie_similar"
SIMILAR_SERVICE = "similar_movies_v1"
SIMILAR_FEATURES = ("movie_ids", "scores", "model_version", "data_version")
SIMILAR_COLUMNS = (MOVIE_KEY, *SIMILAR_FEATURES, "event_timestamp")
USER_FEATURES = ("item_ids", "scores", "model_version", "data_version")
HISTORY_FEATURES = ("movie_ids", "data_version")
MOVIE_FEATURES = ("title",)
REPO_MODULES = ("entities", "data_sources", "feature_views", "feature_services")
RECS_COLUMNS = (USER_KEY, *USER_FEATURES, "event_timestamp")
HISTORY_COLUMNS = (USER_KEY, *HISTORY_FEATURES, "event_timestamp")
CATALOGUE_COLUMNS = (MOVIE_KEY, "title")
BATCH_SIZE = 10_000  # rows per write_to_online_store call or pipelined round trip: bounds memory
Writer = Literal["fast", "feast"]
ENCODERS: dict[str, Callable[[Any], list[bytes]]] = {  # Feast ValueType name -> column encoder
    "INT64_LIST": feast_layout.int64_list_values,
    "FLOAT_LIST": feast_layout.float_list_values,
    "STRING": feast_layout.string_values,
}


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

    with _environment("REDIS_CONNECTION_STRING", settings.redis_connection):
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


@dataclass(frozen=True)
class ViewLayout:
    """What Feast's Redis online store writes for one feature view, read from the registered repo."""

    project: str
    join_key: str  # the view's one Int64 entity column
    timestamp_field: str  # frame column of the event time (the batch source's timestamp_field)
    timestamp_key: bytes  # hash field of the event time: "_ts:<view>"
    features: tuple[tuple[str, bytes, str], ...]  # (frame column, hash field, Feast ValueType name)
    ttl_seconds: int | None  # EXPIRE after each HSET when feature_store.yaml sets key_ttl_seconds


def _unsupported_config(store: FeatureStore) -> list[str]:
    """Settings of the repo's online store that the fast writer does not reproduce."""
    config = store.config
    online = config.online_store
    problems = []
    if getattr(online, "type", None) != "redis":
        problems.append(f"online_store type {getattr(online, 'type', type(online).__name__)!r}")
    else:
        if online.redis_type.value != "redis":
            problems.append(f"online_store.redis_type {online.redis_type.value!r}")
        if not online.skip_dedup:  # Feast then reads each key's timestamp and skips older rows
            problems.append("online_store.skip_dedup false")
    if config.entity_key_serialization_version != 3:
        problems.append(f"entity_key_serialization_version {config.entity_key_serialization_version}")
    return problems


def view_layout(store: FeatureStore, view: str) -> ViewLayout:
    """The Redis layout Feast uses for ``view``, from ``store``'s config and registry.

    Raises StoreError naming every setting the fast writer does not implement (another online
    store type, Redis cluster or sentinel, ``skip_dedup: false``, another entity key serialization,
    a join key that is not one Int64, a field mapping, a feature type other than Array(Int64),
    Array(Float32) and String).
    """
    from feast.infra.online_stores.helpers import compute_versioned_name

    fv = store.get_feature_view(view)
    source = fv.batch_source
    problems = _unsupported_config(store)
    entities = [(e.name, e.dtype.to_value_type().name) for e in fv.entity_columns]
    if len(entities) != 1 or entities[0][1] != "INT64":
        problems.append(f"view {view} keyed by {entities}")
    if source is None:
        problems.append(f"view {view} without a batch source")
    elif source.field_mapping:
        problems.append(f"view {view} field_mapping {source.field_mapping}")
    kinds = {f.name: f.dtype.to_value_type().name for f in fv.features}
    problems += [
        f"feature {view}:{name} of type {kind}" for name, kind in kinds.items() if kind not in ENCODERS
    ]
    if problems or source is None:
        raise StoreError(
            f"the fast online writer does not implement {'; '.join(problems)}; "
            "publish with writer='feast' or change feature_repo/"
        )
    name = compute_versioned_name(fv, store.config.registry.enable_online_feature_view_versioning)
    return ViewLayout(
        project=store.config.project,
        join_key=entities[0][0],
        timestamp_field=source.timestamp_field,
        timestamp_key=f"_ts:{name}".encode(),
        features=tuple((f, feast_layout.field_key(name, f), kind) for f, kind in kinds.items()),
        ttl_seconds=store.config.online_store.key_ttl_seconds,
    )


def _hash_commands(layout: ViewLayout, frame: pd.DataFrame) -> Iterator[tuple[bytes, list[bytes]]]:
    """(key, [field, value, field, value...]) per row of ``frame``: Feast's HSET, encoded by column."""
    import pandas as pd

    keys = feast_layout.entity_keys(layout.join_key, frame[layout.join_key].to_numpy(), layout.project)
    stamps = pd.DatetimeIndex(frame[layout.timestamp_field]).as_unit("ns").asi8
    fields = [layout.timestamp_key, *(field for _, field, _ in layout.features)]
    columns = [feast_layout.timestamp_values(stamps)]
    columns += [ENCODERS[kind](frame[column].tolist()) for column, _, kind in layout.features]
    for key, *values in zip(keys, *columns):
        yield key, [item for pair in zip(fields, values) for item in pair]


def _write_fast(
    conn: redis.Redis, layout: ViewLayout, frame: pd.DataFrame, rows: int, done: Callable[[int], None]
) -> int:
    """Write ``frame`` as Feast would, ``rows`` HSETs per pipelined round trip; returns the trips.
    ``done(rows)`` follows each round trip."""
    batches = 0
    for start in range(0, len(frame), rows):
        chunk = frame.iloc[start : start + rows]
        with conn.pipeline(transaction=False) as pipe:
            for key, pairs in _hash_commands(layout, chunk):
                pipe.execute_command("HSET", key, *pairs)
                if layout.ttl_seconds:
                    pipe.expire(key, layout.ttl_seconds)
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
        data_version=recs["data_version"].astype(str),
        event_timestamp=stamp,
    )
    run_time = stamp.max() if len(stamp) else pd.Timestamp.now(tz="UTC")
    movies = catalogue[list(CATALOGUE_COLUMNS)].astype({MOVIE_KEY: "int64", "title": str})
    return users, movies.assign(event_timestamp=run_time)


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


@contextmanager
def _online_writer(
    store: FeatureStore,
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
    layouts = {view: view_layout(store, view) for view in views} if writer == "fast" else {}
    conn = redis_server.client(store.config.online_store.connection_string) if layouts else None

    def write(view: str, frame: pd.DataFrame) -> int:
        if conn is None:
            return _write_online(store, view, frame, batch_size, done)
        return _write_fast(conn, layouts[view], frame, batch_size, done)

    try:
        yield write
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise redis_server.unreachable(settings, exc) from exc
    finally:
        if conn is not None:
            conn.close()


def publish(
    recs: pd.DataFrame,
    catalogue: pd.DataFrame,
    settings: Settings,
    histories: pd.DataFrame | None = None,
    batch_size: int = BATCH_SIZE,
    writer: Writer = "fast",
) -> dict[str, Any]:
    """Write every user's list, every title and (when given) every user's history to the online store.

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
    users, movies = _prepare(recs, catalogue)
    frames = {USER_VIEW: users, MOVIE_VIEW: movies}
    if histories is not None:
        frames[HISTORY_VIEW] = _prepare_histories(histories)
    redis_server.require(settings)
    started = time.perf_counter()
    store = feature_store(settings)
    batches, online = 0, 0.0
    import numpy as np

    total, written = sum(len(f) for f in frames.values()), [0]
    record = redis_server.client(settings.redis_connection)

    def done(rows: int) -> None:
        written[0] += rows
        publication.progress(record, written[0], total)

    try:
        with _online_writer(store, list(frames), writer, batch_size, settings, done) as write:
            publication.begin(
                record, _versions(users, "model_version"), _versions(users, "data_version"), total
            )
            for view, frame in frames.items():
                _write_record(frame, settings.paths.feature_repo, view)
                writing = time.perf_counter()
                batches += write(view, frame)
                online += time.perf_counter() - writing
            stale = publication.finish(
                record,
                users[USER_KEY].tolist(),
                lambda u: feast_layout.entity_keys(USER_KEY, np.array([u]), PROJECT)[0],
                remove_stale=settings.store.stale_users == "remove",
            )
    finally:
        record.close()
    seconds = time.perf_counter() - started
    n_histories = len(frames.get(HISTORY_VIEW, ()))
    log.info(
        "published %d lists, %d histories and %d titles in %.1fs (%.1fs online, %s writer)",
        len(users),
        n_histories,
        len(movies),
        seconds,
        online,
        writer,
    )
    return {
        "users": len(users),
        "movies": len(movies),
        "histories": n_histories,
        "batches": batches,
        "stale_users_removed": stale,
        "writer": writer,
        "seconds": round(seconds, 3),
        "online_seconds": round(online, 3),
    }


def _read_online(
    features: str | list[str], columns: Sequence[str], user_ids: Sequence[int], settings: Settings
) -> pd.DataFrame:
    """``get_online_features`` of a feature service (by name) or feature refs for ``user_ids``.

    One row per requested id, in order, cut to ``columns``. Raises StoreError when Redis is unreachable.
    """
    redis_server.require(settings)
    store = feature_store(settings)
    wanted = store.get_feature_service(features) if isinstance(features, str) else features
    rows = [{USER_KEY: int(u)} for u in user_ids]
    return store.get_online_features(features=wanted, entity_rows=rows).to_df()[list(columns)]


def read_lists(user_ids: Sequence[int], settings: Settings) -> pd.DataFrame:
    """Read users' lists through Feast ``get_online_features`` (feature service recommendations_v1).

    Returns one row per requested id, in order: user_id, item_ids, scores, model_version,
    data_version (None for users without a list). Raises StoreError when Redis is unreachable.
    """
    return _read_online(FEATURE_SERVICE, (USER_KEY, *USER_FEATURES), user_ids, settings)


def read_histories(user_ids: Sequence[int], settings: Settings) -> pd.DataFrame:
    """Read users' histories through Feast ``get_online_features`` on the user_history view.

    Returns one row per requested id, in order: user_id, movie_ids (newest last), data_version
    (None for users without a history). Raises StoreError when Redis is unreachable.
    """
    refs = [f"{HISTORY_VIEW}:{name}" for name in HISTORY_FEATURES]
    return _read_online(refs, (USER_KEY, *HISTORY_FEATURES), user_ids, settings)


def _same_ids(expected: Any, got: Any) -> bool:
    return got is not None and [int(i) for i in got] == [int(i) for i in expected]


def _list_mismatch(expected: Any, got: Any) -> str | None:
    """Name of the first field that differs between a written list and its read-back row."""
    import numpy as np

    if not _same_ids(expected["item_ids"], got["item_ids"]):
        return "item_ids"
    want = np.asarray(expected["scores"], dtype=np.float32)
    have = np.asarray(got["scores"], dtype=np.float32)
    if want.shape != have.shape or not np.array_equal(want, have):
        return "scores"
    for field in ("model_version", "data_version"):
        if got[field] != str(expected[field]):
            return field
    return None


def _history_mismatch(expected: Any, got: Any) -> str | None:
    """Name of the first field that differs between a written history and its read-back row."""
    if not _same_ids(expected["movie_ids"], got["movie_ids"]):
        return "movie_ids"
    return "data_version" if got["data_version"] != str(expected["data_version"]) else None


def _compare(frame: pd.DataFrame, sample: int, settings: Settings, what: str) -> int:
    """Read a fixed sample of ``frame`` (lists or histories) back; StoreError on the first difference."""
    if sample <= 0 or frame.empty:
        return 0
    chosen = frame.sample(n=min(sample, len(frame)), random_state=0)
    read, mismatch = (read_lists, _list_mismatch) if what == "lists" else (read_histories, _history_mismatch)
    got = read(chosen[USER_KEY].tolist(), settings)
    bad = [
        (int(w[USER_KEY]), field)
        for (_, w), (_, g) in zip(chosen.iterrows(), got.iterrows())
        if (field := mismatch(w, g))
    ]
    if bad:
        user_id, field = bad[0]
        raise StoreError(
            f"online store differs from the published {what} for {len(bad)} of {len(chosen)} sampled users "
            f"(first: user {user_id}, field {field}); re-run publish"
        )
    return len(chosen)


def verify(
    recs: pd.DataFrame, settings: Settings, sample: int, histories: pd.DataFrame | None = None
) -> dict[str, int]:
    """Read ``sample`` users of ``recs`` (and of ``histories``) back through Feast and compare.

    The sample is fixed (random_state 0) so a failure reproduces. Returns {"checked" (lists),
    "histories_checked" (0 without histories), "mismatches" (always 0: a difference raises)}.
    Raises StoreError naming the first user and field that differ.
    """
    checked = _compare(recs, sample, settings, "lists")
    histories_checked = 0 if histories is None else _compare(histories, sample, settings, "histories")
    return {"checked": checked, "histories_checked": histories_checked, "mismatches": 0}


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
        model_version=lists["model_version"].astype(str),
        data_version=lists["data_version"].astype(str),
        event_timestamp=pd.to_datetime(lists["event_timestamp"], utc=True),
    )
    redis_server.require(settings)
    started = time.perf_counter()
    store = feature_store(settings)
    with _online_writer(store, [SIMILAR_VIEW], writer, batch_size, settings, lambda rows: None) as write:
        _write_record(frame, settings.paths.feature_repo, SIMILAR_VIEW)
        batches = write(SIMILAR_VIEW, frame)
    seconds = time.perf_counter() - started
    log.info("published the similar movies of %d movies in %.1fs (%s writer)", len(frame), seconds, writer)
    return {"movies": len(frame), "batches": batches, "writer": writer, "seconds": round(seconds, 3)}


def read_similar(movie_ids: Sequence[int], settings: Settings) -> pd.DataFrame:
    """Movies' similar lists through Feast ``get_online_features`` (feature service
    similar_movies_v1): one row per requested id, in order - movie_id, movie_ids, scores,
    model_version, data_version, title (the query movie's). Raises StoreError when Redis is down."""
    redis_server.require(settings)
    store = feature_store(settings)
    rows = [{MOVIE_KEY: int(m)} for m in movie_ids]
    frame = store.get_online_features(
        features=store.get_feature_service(SIMILAR_SERVICE), entity_rows=rows
    ).to_df()
    return frame[[MOVIE_KEY, *SIMILAR_FEATURES, "title"]]


def verify_similar(lists: pd.DataFrame, settings: Settings, sample: int) -> dict[str, int]:
    """Read a fixed sample of movies back through Feast and compare; StoreError on a difference."""
    if sample <= 0 or lists.empty:
        return {"checked": 0, "mismatches": 0}
    chosen = lists.sample(n=min(sample, len(lists)), random_state=0)
    got = read_similar(chosen[MOVIE_KEY].tolist(), settings)
    for (_, want), (_, have) in zip(chosen.iterrows(), got.iterrows()):
        field = _list_mismatch(
            {**want.to_dict(), "item_ids": want["movie_ids"]},
            {**have.to_dict(), "item_ids": have["movie_ids"]},
        )
        if field:
            raise StoreError(
                f"online store differs from the published similar movies (first: movie "
                f"{int(want[MOVIE_KEY])}, field {field}); re-run the similar-movies publish"
            )
    return {"checked": len(chosen), "mismatches": 0}
