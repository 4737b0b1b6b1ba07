"""The online store end to end: real redis-server, real Feast apply/write/read, and the fast lookup."""

from __future__ import annotations

import socket
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from recsys import lookup as fast
from recsys import redis_server, store
from recsys.config import PROJECT_ROOT, Settings
from recsys.errors import InvalidRequestError, StoreError, UnknownUserError

pytestmark = pytest.mark.integration

N_USERS, LIST_LENGTH, N_MOVIES = 40, 25, 300
BIG_MOVIE_ID = 193_609  # the largest ml-latest-small id: a multi-byte varint on the wire


def synthetic_catalogue() -> pd.DataFrame:
    """Titles keyed by movie id, with non-ASCII text to pin the UTF-8 decoding."""
    ids = [*range(1, N_MOVIES), BIG_MOVIE_ID]
    titles = [f"Amélie {m} (2001)" if m % 7 == 0 else f"Movie {m} (1999)" for m in ids]
    return pd.DataFrame({"movie_id": np.array(ids, dtype="int64"), "title": titles})


def synthetic_recs(seed: int = 0, model_version: str = "7") -> pd.DataFrame:
    """One list per user: distinct movie ids, best first, strictly decreasing float32 scores."""
    rng = np.random.default_rng(seed)
    ids = synthetic_catalogue()["movie_id"].to_numpy()
    items = [rng.choice(ids, LIST_LENGTH, replace=False).astype("int64") for _ in range(N_USERS)]
    items[0][0] = BIG_MOVIE_ID if BIG_MOVIE_ID not in items[0] else items[0][0]
    scores = [np.sort(rng.normal(size=LIST_LENGTH)).astype("float32")[::-1] for _ in range(N_USERS)]
    return pd.DataFrame(
        {
            "user_id": np.arange(1, 3 * N_USERS + 1, 3, dtype="int64"),
            "item_ids": items,
            "scores": scores,
            "model_version": model_version,
            "event_timestamp": pd.Timestamp("2026-11-23 02:00", tz="UTC"),
        }
    )


@pytest.fixture(scope="module")
def published(redis_settings: Settings) -> pd.DataFrame:
    """Apply the repo and publish the synthetic lists once for the module; returns the recs frame."""
    store.apply(redis_settings)
    recs = synthetic_recs()
    counts = store.publish(recs, synthetic_catalogue(), redis_settings)
    assert counts["users"] == N_USERS and counts["movies"] == N_MOVIES
    return recs


def redis_dump(settings: Settings) -> dict[bytes, dict[bytes, bytes]]:
    conn = redis_server.client(settings.store.connection_string or "")
    try:
        return {key: conn.hgetall(key) for key in conn.scan_iter()}
    finally:
        conn.close()


def port_open(settings: Settings) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((settings.store.host, settings.store.port)) == 0


def test_apply_registers_the_repo_objects(published: pd.DataFrame, redis_settings: Settings) -> None:
    fs = store.feature_store(redis_settings)
    assert fs.project == store.PROJECT
    service = fs.get_feature_service(store.FEATURE_SERVICE)
    assert [p.name for p in service.feature_view_projections] == [store.USER_VIEW]
    views = {fv.name: [f.name for f in fv.features] for fv in fs.list_feature_views()}
    assert views == {store.USER_VIEW: list(store.USER_FEATURES), store.MOVIE_VIEW: ["title"]}
    assert store.apply(redis_settings) == store.apply(redis_settings)  # re-applying changes nothing
    repo = redis_settings.paths.feature_repo
    assert repo != PROJECT_ROOT / "feature_repo" and (repo / "data" / "registry.db").is_file()
    assert (repo / "data" / f"{store.USER_VIEW}.parquet").is_file()


def test_feast_reads_back_exactly_what_was_written(
    published: pd.DataFrame, redis_settings: Settings
) -> None:
    read = store.read_lists([*published["user_id"], 999_999], redis_settings)
    assert read["user_id"].tolist() == [*published["user_id"], 999_999]
    for (_, want), (_, got) in zip(published.iterrows(), read.iterrows()):
        assert list(got["item_ids"]) == want["item_ids"].tolist()
        np.testing.assert_array_equal(np.asarray(got["scores"], dtype=np.float32), want["scores"])
        assert got["model_version"] == "7"
    assert read.iloc[-1][["item_ids", "scores", "model_version"]].isna().all()
    assert store.verify(published, redis_settings, sample=10) == {"checked": 10, "mismatches": 0}


def test_lookup_matches_feast_with_titles_best_first(
    published: pd.DataFrame, redis_settings: Settings
) -> None:
    titles = dict(zip(*synthetic_catalogue().to_dict("list").values()))
    for _, row in published.iterrows():
        got = fast.lookup(int(row["user_id"]), k=fast.MAX_K, settings=redis_settings)
        assert [m for m, _, _ in got] == row["item_ids"].tolist()
        assert [s for _, s, _ in got] == row["scores"].astype(float).tolist()  # float32 values, exact
        assert [t for _, _, t in got] == [titles[m] for m in row["item_ids"]]
        assert all(a[1] >= b[1] for a, b in zip(got, got[1:]))
    first = published.iloc[0]
    assert fast.lookup(int(first["user_id"]), settings=redis_settings)[0][0] == BIG_MOVIE_ID


def test_lookup_truncates_to_k_and_lookup_many_equals_single(
    published: pd.DataFrame, redis_settings: Settings
) -> None:
    users = published["user_id"].tolist()[:5]
    many = fast.lookup_many(users, k=3, settings=redis_settings)
    assert set(many) == set(users)
    for user in users:
        single = fast.lookup(user, k=3, settings=redis_settings)
        assert single == many[user] and len(single) == 3
        assert single == fast.lookup(user, k=10, settings=redis_settings)[:3]
        assert all(isinstance(m, int) and isinstance(s, float) and isinstance(t, str) for m, s, t in single)


def test_publishing_twice_is_idempotent(published: pd.DataFrame, redis_settings: Settings) -> None:
    before = redis_dump(redis_settings)
    store.publish(published, synthetic_catalogue(), redis_settings)
    assert redis_dump(redis_settings) == before
    assert len(before) == N_USERS + N_MOVIES


def test_verify_raises_when_the_store_differs(published: pd.DataFrame, redis_settings: Settings) -> None:
    other = synthetic_recs(seed=1, model_version="8")
    try:
        store.publish(other, synthetic_catalogue(), redis_settings)
        with pytest.raises(StoreError, match="differs from the published lists"):
            store.verify(published, redis_settings, sample=5)
        top = fast.lookup(int(other["user_id"][0]), k=1, settings=redis_settings)
        assert top[0][0] == other["item_ids"][0][0]
    finally:
        store.publish(published, synthetic_catalogue(), redis_settings)


@pytest.mark.parametrize(
    ("user_id", "k", "error", "text"),
    [
        (999_999, 10, UnknownUserError, "user 999999 has no recommendations"),
        (0, 10, InvalidRequestError, "got 0"),
        (-3, 10, InvalidRequestError, "got -3"),
        ("1", 10, InvalidRequestError, "got '1'"),
        (1.0, 10, InvalidRequestError, "got 1.0"),
        (1, 0, InvalidRequestError, "k must be an integer in 1..100, got 0"),
        (1, 101, InvalidRequestError, "got 101"),
    ],
)
def test_lookup_rejects_bad_requests(
    published: pd.DataFrame, redis_settings: Settings, user_id: object, k: object, error: type, text: str
) -> None:
    with pytest.raises(error, match=text) as caught:
        fast.lookup(user_id, k=k, settings=redis_settings)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_unreachable_redis_raises_store_error(isolated_settings: Callable[..., Settings]) -> None:
    settings = isolated_settings()
    with pytest.raises(StoreError, match=r"unreachable.*recsys up.*REDIS_CONNECTION_STRING"):
        fast.lookup(1, settings=settings)
    with pytest.raises(StoreError, match="unreachable"):
        store.publish(synthetic_recs(), synthetic_catalogue(), settings)
    closed = isolated_settings().store.port  # a free port nothing listens on
    external = isolated_settings(None, f"store.connection_string=127.0.0.1:{closed}")
    assert not external.uses_embedded_redis
    with pytest.raises(StoreError, match="start it or set REDIS_CONNECTION_STRING"):
        redis_server.ensure_running(external)


def test_stop_closes_the_port_and_restart_keeps_the_lists(
    published: pd.DataFrame, own_redis: Settings
) -> None:
    store.publish(published, synthetic_catalogue(), own_redis)
    user = int(published["user_id"][3])
    expected = fast.lookup(user, k=5, settings=own_redis)
    assert redis_server.start(own_redis) == own_redis.store.connection_string  # reuses the running one
    assert redis_server.stop(own_redis) is True
    assert not port_open(own_redis)
    assert redis_server.stop(own_redis) is False
    with pytest.raises(StoreError, match="unreachable"):
        fast.lookup(user, k=5, settings=own_redis)
    redis_server.ensure_running(own_redis)
    assert fast.lookup(user, k=5, settings=own_redis) == expected
    conn = redis_server.client(own_redis.store.connection_string or "")
    assert conn.config_get("bind")["bind"] == "127.0.0.1"
    assert conn.config_get("protected-mode")["protected-mode"] == "yes"
    conn.close()
