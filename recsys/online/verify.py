"""Read-back checks of a publish: a fixed sample of the written lists, histories and similar movies
must come back as written, read through Feast's own ``get_online_features``, or (``through=
"registered"``) through the layouts of the current registration record
(recsys.online.feast_repo.registered_layouts): the hash fields Feast reads, decoded without Feast.

Imports Feast (through recsys.online.feast_repo) only inside the functions that read through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import redis

from recsys.config import Settings
from recsys.errors import StoreError
from recsys.online import layout
from recsys.online.feast_repo import ViewLayout, feature_store, registered_layouts
from recsys.online.layout import (
    FEATURE_SERVICE,
    HISTORY_FEATURES,
    HISTORY_VIEW,
    MOVIE_KEY,
    SIMILAR_FEATURES,
    SIMILAR_SERVICE,
    USER_FEATURES,
    USER_KEY,
    USER_VIEW,
)
from recsys.ops import redis_server

if TYPE_CHECKING:
    import pandas as pd


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
    data_version, scored_at (None for users without a list). Raises StoreError when Redis is unreachable.
    """
    return _read_online(FEATURE_SERVICE, (USER_KEY, *USER_FEATURES), user_ids, settings)


def read_histories(user_ids: Sequence[int], settings: Settings) -> pd.DataFrame:
    """Read users' histories through Feast ``get_online_features`` on the user_history view.

    Returns one row per requested id, in order: user_id, movie_ids (newest last), data_version
    (None for users without a history). Raises StoreError when Redis is unreachable.
    """
    refs = [f"{HISTORY_VIEW}:{name}" for name in HISTORY_FEATURES]
    return _read_online(refs, (USER_KEY, *HISTORY_FEATURES), user_ids, settings)


def read_registered(view: ViewLayout, ids: Sequence[int], settings: Settings) -> pd.DataFrame:
    """Every feature of ``view`` for ``ids`` as the registration record lays it out, one pipelined
    round trip: one row per id, in order, None where Redis holds no value. StoreError when Redis
    is unreachable."""
    import numpy as np
    import pandas as pd

    fields = [field for _, field, _ in view.features]
    keys = layout.entity_keys(view.join_key, np.asarray(ids, dtype=np.int64), view.project)
    conn = redis_server.client(settings.redis_connection)
    try:
        with conn.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, fields)
            replies = pipe.execute()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise redis_server.unreachable(settings, exc) from exc
    finally:
        conn.close()
    rows = [
        {view.join_key: int(i), **{c: layout.decode_value(v) for (c, _, _), v in zip(view.features, reply)}}
        for i, reply in zip(ids, replies)
    ]
    return pd.DataFrame(rows, columns=[view.join_key, *(c for c, _, _ in view.features)])


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
    if "arm" in got and got["arm"] != str(expected.get("arm", "champion")):  # a frame without arms: champion
        return "arm"
    if "because_ids" in got and not _same_ids(expected.get("because_ids", []), got["because_ids"] or []):
        return "because_ids"
    if "scored_at" not in got:  # the similar-movie lists carry their time as the event timestamp only
        return None
    import pandas as pd

    stamp = pd.Timestamp(expected["event_timestamp"])
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return "scored_at" if got["scored_at"] != stamp.isoformat(timespec="seconds") else None


def _history_mismatch(expected: Any, got: Any) -> str | None:
    """Name of the first field that differs between a written history and its read-back row."""
    if not _same_ids(expected["movie_ids"], got["movie_ids"]):
        return "movie_ids"
    return "data_version" if got["data_version"] != str(expected["data_version"]) else None


Through = Literal["feast", "registered"]


def _compare(
    frame: pd.DataFrame, sample: int, settings: Settings, what: str, layouts: dict[str, ViewLayout]
) -> int:
    """Read a fixed sample of ``frame`` (lists or histories) back; StoreError on the first difference."""
    if sample <= 0 or frame.empty:
        return 0
    chosen = frame.sample(n=min(sample, len(frame)), random_state=0)
    read, mismatch = (read_lists, _list_mismatch) if what == "lists" else (read_histories, _history_mismatch)
    if layouts:  # through the registered layouts, else through Feast
        view = layouts[USER_VIEW if what == "lists" else HISTORY_VIEW]
        got = read_registered(view, chosen[USER_KEY].tolist(), settings)
    else:
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
    recs: pd.DataFrame,
    settings: Settings,
    sample: int,
    histories: pd.DataFrame | None = None,
    through: Through = "feast",
) -> dict[str, Any]:
    """Read ``sample`` users of ``recs`` (and of ``histories``) back and compare: through Feast, or
    through the registered layouts (module docstring; Feast when there is no current record).

    The sample is fixed (random_state 0) so a failure reproduces. Returns {"checked" (lists),
    "histories_checked" (0 without histories), "mismatches" (always 0: a difference raises),
    "through"}. Raises StoreError naming the first user and field that differ.
    """
    layouts = registered_layouts(settings) if through == "registered" else {}
    if not {USER_VIEW, HISTORY_VIEW} <= set(layouts):
        through, layouts = "feast", {}
    checked = _compare(recs, sample, settings, "lists", layouts)
    histories_checked = (
        0 if histories is None else _compare(histories, sample, settings, "histories", layouts)
    )
    return {"checked": checked, "histories_checked": histories_checked, "mismatches": 0, "through": through}


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
