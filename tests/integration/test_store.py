"""The online store end to end: real redis-server, real Feast apply/write/read, and the fast lookup.

Lists, histories and titles are published with the default (fast) writer and read back both through
Feast and through the hand-written decoder in recsys.online.reader. The fast writer is compared byte for
byte with Feast's own ``write_to_online_store``, which pins writer and decoder to Feast's layout.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.config import PROJECT_ROOT, Settings
from recsys.errors import DataError, InvalidRequestError, StoreError, UnknownUserError
from recsys.online import feast_repo, layout, verify, writer
from recsys.online import reader as fast
from recsys.ops import redis_server

pytestmark = pytest.mark.integration

N_USERS, LIST_LENGTH, N_MOVIES = 40, 25, 300
BIG_MOVIE_ID = 193_609  # the largest ml-latest-small id: a multi-byte varint on the wire
LONG_HISTORY = 50
STAMP = pd.Timestamp("2026-11-23 02:00", tz="UTC")


def synthetic_catalogue() -> pd.DataFrame:
    """Titles keyed by movie id, with non-ASCII text to pin the UTF-8 decoding."""
    ids = [*range(1, N_MOVIES), BIG_MOVIE_ID]
    titles = [f"Amélie {m} (2001)" if m % 7 == 0 else f"Movie {m} (1999)" for m in ids]
    return pd.DataFrame({"movie_id": np.array(ids, dtype="int64"), "title": titles})


def synthetic_recs(seed: int = 0, model_version: str = "7", data_version: str = "d41d8cd") -> pd.DataFrame:
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
            "data_version": data_version,
            "event_timestamp": STAMP,
        }
    )


def synthetic_histories(seed: int = 0) -> pd.DataFrame:
    """Histories of every recs user but the last: the first empty, the second 50 long (newest last).

    Unsorted ids, so a reader that reorders them fails; the big id pins multi-byte varints.
    """
    rng = np.random.default_rng(seed)
    ids = synthetic_catalogue()["movie_id"].to_numpy()
    users = synthetic_recs()["user_id"].to_numpy()[:-1]
    lengths = [0, LONG_HISTORY, *rng.integers(1, 20, size=len(users) - 2)]
    movie_ids = [rng.choice(ids, n, replace=False).astype("int64") for n in lengths]
    movie_ids[2][-1] = BIG_MOVIE_ID if BIG_MOVIE_ID not in movie_ids[2] else movie_ids[2][-1]
    return pd.DataFrame(
        {"user_id": users, "movie_ids": movie_ids, "data_version": "d41d8cd", "event_timestamp": STAMP}
    )


@pytest.fixture(scope="module")
def histories() -> pd.DataFrame:
    return synthetic_histories()


@pytest.fixture(scope="module")
def published(redis_settings: Settings, histories: pd.DataFrame) -> pd.DataFrame:
    """Apply the repo and publish the synthetic lists and histories once for the module; returns recs."""
    feast_repo.apply(redis_settings)
    recs = synthetic_recs()
    counts = writer.publish(recs, synthetic_catalogue(), redis_settings, histories)
    assert counts["users"] == N_USERS and counts["movies"] == N_MOVIES and counts["writer"] == "fast"
    assert counts["histories"] == N_USERS - 1
    return recs


def redis_dump(settings: Settings) -> dict[bytes, dict[bytes, bytes]]:
    """Every Feast hash (the publication record beside them is left out: it holds times)."""
    conn = redis_server.client(settings.redis_connection)
    try:
        return {key: conn.hgetall(key) for key in conn.scan_iter() if not key.startswith(b"recsys:publ")}
    finally:
        conn.close()


def port_open(settings: Settings) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((settings.store.host, settings.store.port)) == 0


def test_apply_registers_the_repo_objects(published: pd.DataFrame, redis_settings: Settings) -> None:
    fs = feast_repo.feature_store(redis_settings)
    assert fs.project == layout.PROJECT
    service = fs.get_feature_service(layout.FEATURE_SERVICE)
    projections = {p.name: [f.name for f in p.features] for p in service.feature_view_projections}
    assert projections == {layout.USER_VIEW: list(layout.USER_FEATURES), layout.HISTORY_VIEW: ["movie_ids"]}
    views = {fv.name: [f.name for f in fv.features] for fv in fs.list_feature_views()}
    assert views == {
        layout.USER_VIEW: list(layout.USER_FEATURES),
        layout.HISTORY_VIEW: list(layout.HISTORY_FEATURES),
        layout.MOVIE_VIEW: ["title"],
        layout.SIMILAR_VIEW: list(layout.SIMILAR_FEATURES),
    }
    similar = fs.get_feature_service(layout.SIMILAR_SERVICE)
    assert {p.name for p in similar.feature_view_projections} == {layout.SIMILAR_VIEW, layout.MOVIE_VIEW}
    assert feast_repo.apply(redis_settings) == feast_repo.apply(redis_settings)  # re-applying changes nothing
    repo = redis_settings.paths.feature_repo
    assert repo != PROJECT_ROOT / "feature_repo" and (repo / "data" / "registry.db").is_file()
    record = pd.read_parquet(repo / "data" / f"{layout.HISTORY_VIEW}.parquet")
    assert record.columns.tolist() == list(layout.HISTORY_COLUMNS) and len(record) == N_USERS - 1
    assert (repo / "data" / f"{layout.USER_VIEW}.parquet").is_file()


def test_feast_reads_back_exactly_what_was_written(
    published: pd.DataFrame, histories: pd.DataFrame, redis_settings: Settings
) -> None:
    read = verify.read_lists([*published["user_id"], 999_999], redis_settings)
    assert read["user_id"].tolist() == [*published["user_id"], 999_999]
    for (_, want), (_, got) in zip(published.iterrows(), read.iterrows()):
        assert list(got["item_ids"]) == want["item_ids"].tolist()
        np.testing.assert_array_equal(np.asarray(got["scores"], dtype=np.float32), want["scores"])
        assert got["model_version"] == "7" and got["data_version"] == "d41d8cd"
        assert got["scored_at"] == "2026-11-23T02:00:00+00:00"  # the list's event timestamp, ISO 8601
    assert read.iloc[-1][list(layout.USER_FEATURES)].isna().all()
    assert verify.verify(published, redis_settings, sample=10, histories=histories) == {
        "checked": 10,
        "histories_checked": 10,
        "mismatches": 0,
        "through": "feast",
    }
    # the registration record's layouts read the same values as Feast, missing user included
    ids = [*published["user_id"], 999_999]
    registered = feast_repo.registered_layouts(redis_settings)
    for view, features, by_feast in (
        (layout.USER_VIEW, layout.USER_FEATURES, read),
        (layout.HISTORY_VIEW, layout.HISTORY_FEATURES, verify.read_histories(ids, redis_settings)),
    ):
        mine = verify.read_registered(registered[view], ids, redis_settings)
        for feature in features:
            want = [None if v is None else (v if isinstance(v, str) else list(v)) for v in by_feast[feature]]
            assert mine[feature].tolist() == want, (view, feature)
    through = verify.verify(published, redis_settings, 10, histories, through="registered")
    assert through == {"checked": 10, "histories_checked": 10, "mismatches": 0, "through": "registered"}


def test_a_registration_record_stands_for_feast_until_the_repo_or_registry_changes(
    own_redis: Settings,
    isolated_settings: Callable[..., Settings],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    repo = repo_variant(own_redis.paths.feature_repo, tmp_path / "registered_repo", "skip_dedup: true")
    settings = isolated_settings(own_redis.store.port, f"paths.feature_repo={repo}")
    assert feast_repo.registered_layouts(settings) == {}  # never applied
    names = feast_repo.apply(settings)
    store = feast_repo.feature_store(settings)
    registered = feast_repo.registered_layouts(settings)
    views = (layout.USER_VIEW, layout.HISTORY_VIEW, layout.MOVIE_VIEW, layout.SIMILAR_VIEW)
    assert registered == {view: feast_repo.view_layout(store, view) for view in views}
    registry = repo / "data" / "registry.db"
    before = registry.read_bytes()
    with caplog.at_level("INFO", logger="recsys.online.feast_repo"):
        assert feast_repo.apply(settings) == names  # nothing to do: no Feast apply
    assert "registered as it stands" in caplog.text and registry.read_bytes() == before
    definitions = repo / "feature_views.py"
    definitions.write_text(definitions.read_text() + "\n# edited\n")  # a changed definition
    assert feast_repo.registered_layouts(settings) == {}
    feast_repo.apply(settings)
    assert feast_repo.registered_layouts(settings) == registered
    registry.unlink()  # a registry removed behind the record's back
    assert feast_repo.registered_layouts(settings) == {}
    feast_repo.apply(settings)
    assert registry.is_file() and feast_repo.registered_layouts(settings) == registered


def test_feature_service_serves_lists_and_histories(
    published: pd.DataFrame, histories: pd.DataFrame, redis_settings: Settings
) -> None:
    fs = feast_repo.feature_store(redis_settings)
    users = [*published["user_id"], 999_999]
    rows = [{"user_id": int(u)} for u in users]
    got = fs.get_online_features(features=fs.get_feature_service("recommendations_v1"), entity_rows=rows)
    served = got.to_dict()
    assert set(served) == {
        "user_id",
        "item_ids",
        "scores",
        "because_ids",
        "model_version",
        "arm",
        "data_version",
        "scored_at",
        "movie_ids",
    }
    want_history = dict(zip(histories["user_id"], histories["movie_ids"]))
    for i, (_, want) in enumerate(published.iterrows()):
        assert served["item_ids"][i] == want["item_ids"].tolist()
        assert served["data_version"][i] == "d41d8cd" and served["model_version"][i] == "7"
        assert served["arm"][i] == "champion"  # a frame without arms is the champion's
        assert served["because_ids"][i] == []  # a frame without reasons stores none
        expected = want_history.get(want["user_id"])
        assert served["movie_ids"][i] == (None if expected is None else expected.tolist())
    assert served["movie_ids"][0] == [] and len(served["movie_ids"][1]) == LONG_HISTORY
    assert all(served[name][-1] is None for name in served if name != "user_id")


def test_read_histories_through_feast(
    histories: pd.DataFrame, published: pd.DataFrame, redis_settings: Settings
) -> None:
    users = [*histories["user_id"], int(published["user_id"].iat[-1])]
    read = verify.read_histories(users, redis_settings)
    assert read.columns.tolist() == ["user_id", "movie_ids", "data_version"]
    assert read["user_id"].tolist() == users
    assert [list(m) for m in read["movie_ids"][:-1]] == [m.tolist() for m in histories["movie_ids"]]
    assert (read["data_version"][:-1] == "d41d8cd").all()
    assert read.iloc[-1][["movie_ids", "data_version"]].isna().all()


def test_history_lookup_matches_feast(
    histories: pd.DataFrame, published: pd.DataFrame, redis_settings: Settings
) -> None:
    users = histories["user_id"].tolist()
    by_feast = verify.read_histories(users, redis_settings)
    many = fast.history_many(users, settings=redis_settings)
    assert list(many) == users
    for user, feast_ids, want in zip(users, by_feast["movie_ids"], histories["movie_ids"]):
        got = fast.history(user, settings=redis_settings)
        assert got == list(feast_ids) == want.tolist() == many[user]
        assert all(type(m) is int for m in got)
    assert many[users[0]] == [] and len(many[users[1]]) == LONG_HISTORY
    assert BIG_MOVIE_ID in many[users[2]]


def test_empty_history_is_an_empty_int64_list_on_the_wire(
    histories: pd.DataFrame, published: pd.DataFrame, redis_settings: Settings
) -> None:
    empty_user = int(histories["user_id"].iat[0])
    conn = redis_server.client(redis_settings.redis_connection)
    try:
        raw = conn.hget(fast.entity_key("user_id", empty_user), fast.HISTORY_FIELD)
    finally:
        conn.close()
    assert raw == b"r\x00"  # Value.int64_list_val (field 14) holding nothing; not an unset Value
    assert fast.decode_value(raw) == []
    assert fast.decode_value(None) is None


def test_history_of_unknown_user(
    published: pd.DataFrame, histories: pd.DataFrame, redis_settings: Settings
) -> None:
    without = int(published["user_id"].iat[-1])  # has a list but no history
    assert without not in set(histories["user_id"])
    for user in (without, 999_999):
        with pytest.raises(UnknownUserError, match=f"user {user} has no history"):
            fast.history(user, settings=redis_settings)
    assert fast.history_many([without, 999_999], settings=redis_settings) == {without: [], 999_999: []}
    with pytest.raises(InvalidRequestError, match="got 0"):
        fast.history(0, settings=redis_settings)
    with pytest.raises(InvalidRequestError, match="got 'seven'"):
        fast.history_many([1, "seven"], settings=redis_settings)  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("change", "text"),
    [
        (lambda h: pd.concat([h, h.iloc[[3]]]), "duplicate user_id rows .e.g. user 10."),
        (lambda h: h.drop(columns="data_version"), r"lacks column\(s\) \['data_version'\]"),
        (lambda h: h.assign(movie_ids=[None, *h["movie_ids"][1:]]), "movie_ids of user 1 is not a list"),
    ],
)
def test_publish_rejects_bad_histories_before_writing(
    published: pd.DataFrame,
    histories: pd.DataFrame,
    redis_settings: Settings,
    change: Callable[[pd.DataFrame], pd.DataFrame],
    text: str,
) -> None:
    before = redis_dump(redis_settings)
    other = synthetic_recs(seed=1, model_version="8")
    with pytest.raises(DataError, match=text):
        writer.publish(other, synthetic_catalogue(), redis_settings, change(histories))
    assert redis_dump(redis_settings) == before


def test_verify_raises_when_histories_or_data_version_differ(
    published: pd.DataFrame, histories: pd.DataFrame, redis_settings: Settings
) -> None:
    reversed_ = histories.assign(movie_ids=[m[::-1] for m in histories["movie_ids"]])
    try:
        writer.publish(published, synthetic_catalogue(), redis_settings, reversed_)
        with pytest.raises(StoreError, match=r"published histories .* field movie_ids"):
            verify.verify(published, redis_settings, sample=N_USERS, histories=histories)
        writer.publish(published.assign(data_version="v2"), synthetic_catalogue(), redis_settings)
        with pytest.raises(StoreError, match=r"published lists for 40 of 40 .* field data_version"):
            verify.verify(published, redis_settings, sample=N_USERS)
    finally:
        writer.publish(published, synthetic_catalogue(), redis_settings, histories)
    assert verify.verify(published, redis_settings, N_USERS, histories)["histories_checked"] == N_USERS - 1


def test_lookup_matches_feast_with_titles_best_first(
    published: pd.DataFrame, redis_settings: Settings
) -> None:
    titles = dict(zip(*synthetic_catalogue().to_dict("list").values()))
    for _, row in published.iterrows():
        got = fast.lookup(int(row["user_id"]), k=len(row["item_ids"]), settings=redis_settings)
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


def test_publishing_twice_is_idempotent(
    published: pd.DataFrame, histories: pd.DataFrame, redis_settings: Settings
) -> None:
    before = redis_dump(redis_settings)
    writer.publish(published, synthetic_catalogue(), redis_settings, histories)
    assert redis_dump(redis_settings) == before
    assert len(before) == N_USERS + N_MOVIES  # histories live in the users' hashes


def test_verify_raises_when_the_store_differs(published: pd.DataFrame, redis_settings: Settings) -> None:
    other = synthetic_recs(seed=1, model_version="8")
    try:
        writer.publish(other, synthetic_catalogue(), redis_settings)
        with pytest.raises(StoreError, match="differs from the published lists"):
            verify.verify(published, redis_settings, sample=5)
        top = fast.lookup(int(other["user_id"][0]), k=1, settings=redis_settings)
        assert top[0][0] == other["item_ids"][0][0]
    finally:
        writer.publish(published, synthetic_catalogue(), redis_settings)


@pytest.mark.parametrize(
    ("user_id", "k", "error", "text"),
    [
        (999_999, 10, UnknownUserError, "user 999999 has no recommendations"),
        (0, 10, InvalidRequestError, "got 0"),
        (-3, 10, InvalidRequestError, "got -3"),
        ("1.5", 10, InvalidRequestError, "got '1.5'"),
        (1.5, 10, InvalidRequestError, "got 1.5"),
        (True, 10, InvalidRequestError, "got True"),
        (10**30, 10, InvalidRequestError, "user_id must be an integer in 1..9223372036854775807"),
        (1, 0, InvalidRequestError, "k must be an integer in 1..1000, got 0"),
        (1, 1001, InvalidRequestError, "got 1001"),
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
        writer.publish(synthetic_recs(), synthetic_catalogue(), settings)
    closed = isolated_settings().store.port  # a free port nothing listens on
    external = isolated_settings(None, f"store.connection_string=127.0.0.1:{closed}")
    assert not external.uses_embedded_redis
    with pytest.raises(StoreError, match="start it or set REDIS_CONNECTION_STRING"):
        redis_server.ensure_running(external)


def test_stop_closes_the_port_and_restart_keeps_the_lists(
    published: pd.DataFrame, histories: pd.DataFrame, own_redis: Settings
) -> None:
    writer.publish(published, synthetic_catalogue(), own_redis, histories)
    user = int(published["user_id"][3])
    expected = fast.lookup(user, k=5, settings=own_redis)
    assert fast.history(user, settings=own_redis) == histories["movie_ids"][3].tolist()
    assert redis_server.start(own_redis) == own_redis.redis_connection  # reuses the running one
    assert redis_server.stop(own_redis) is True
    assert not port_open(own_redis)
    assert redis_server.stop(own_redis) is False
    with pytest.raises(StoreError, match="unreachable"):
        fast.lookup(user, k=5, settings=own_redis)
    redis_server.ensure_running(own_redis)
    assert fast.lookup(user, k=5, settings=own_redis) == expected
    assert fast.history(user, settings=own_redis) == histories["movie_ids"][3].tolist()
    conn = redis_server.client(own_redis.redis_connection)
    assert conn.config_get("bind")["bind"] == "127.0.0.1"
    assert conn.config_get("protected-mode")["protected-mode"] == "yes"
    conn.close()


def repo_variant(source: Path, folder: Path, *online: str) -> Path:
    """A copy of the Feast repo whose ``skip_dedup: true`` line becomes the ``online`` settings lines."""
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("data", "__pycache__"))
    config = folder / "feature_store.yaml"
    text = config.read_text()
    assert "\n  skip_dedup: true\n" in text
    config.write_text(
        text.replace("\n  skip_dedup: true\n", "".join(f"\n  {line}" for line in online) + "\n")
    )
    return folder


def harder_recs() -> pd.DataFrame:
    """synthetic_recs with per-row times to the nanosecond, an empty list, an id past 2**32, non-ASCII."""
    recs = synthetic_recs(model_version="7-é")
    items, scores = list(recs["item_ids"]), list(recs["scores"])
    items[-1], scores[-1] = np.array([], dtype="int64"), np.array([], dtype="float32")
    return recs.assign(
        user_id=[*recs["user_id"][:-1], 2**33 + 1],
        item_ids=items,
        scores=scores,
        event_timestamp=STAMP + pd.to_timedelta(np.arange(N_USERS) * 1_234_567_891, unit="ns"),
    )


def publish_with_each_writer(
    settings: Settings, recs: pd.DataFrame, histories: pd.DataFrame
) -> dict[str, tuple[dict, set[int]]]:
    """{writer: (HGETALL of every key, the set of key TTLs)}, each written into an emptied database."""
    conn = redis_server.client(settings.redis_connection)
    written = {}
    try:
        for kind in ("feast", "fast"):
            conn.flushdb()
            counts = writer.publish(recs, synthetic_catalogue(), settings, histories, writer=kind)
            assert counts["writer"] == kind and counts["histories"] == len(histories)
            written[kind] = (
                redis_dump(settings),
                {conn.ttl(key) for key in conn.scan_iter() if not key.startswith(b"recsys:publ")},
            )
    finally:
        conn.close()
    return written


def test_fast_writer_writes_the_bytes_feast_writes(own_redis: Settings, histories: pd.DataFrame) -> None:
    feast_repo.apply(own_redis)
    recs = harder_recs()
    written = publish_with_each_writer(own_redis, recs, histories)
    assert written["fast"] == written["feast"]
    contents, ttls = written["fast"]
    assert len(contents) == N_USERS + N_MOVIES and ttls == {-1}  # feature_store.yaml sets no key TTL
    first, big = (fast.entity_key("user_id", int(u)) for u in recs["user_id"].iloc[[0, -1]])
    assert len(contents[first]) == 2 + len(layout.USER_FEATURES) + len(layout.HISTORY_FEATURES)  # + 2 _ts
    assert contents[big][fast.USER_FIELDS[0]] == b"r\x00"  # the empty list, on an id past 2**32


def test_fast_writer_takes_the_key_ttl_from_feature_store_yaml(
    own_redis: Settings, isolated_settings: Callable[..., Settings], tmp_path: Path, histories: pd.DataFrame
) -> None:
    repo = repo_variant(
        own_redis.paths.feature_repo, tmp_path / "ttl_repo", "skip_dedup: true", "key_ttl_seconds: 3600"
    )
    settings = isolated_settings(own_redis.store.port, f"paths.feature_repo={repo}")
    feast_repo.apply(settings)
    assert feast_repo.view_layout(feast_repo.feature_store(settings), layout.USER_VIEW).ttl_seconds == 3600
    written = publish_with_each_writer(settings, synthetic_recs(), histories)
    assert written["fast"][0] == written["feast"][0] and len(written["fast"][0]) == N_USERS + N_MOVIES
    for kind in ("feast", "fast"):
        assert written[kind][1] <= set(range(3590, 3601)), kind


def test_fast_writer_refuses_an_online_store_it_does_not_reproduce(
    own_redis: Settings, isolated_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    repo = repo_variant(own_redis.paths.feature_repo, tmp_path / "dedup_repo", "skip_dedup: false")
    settings = isolated_settings(own_redis.store.port, f"paths.feature_repo={repo}")
    feast_repo.apply(settings)
    recs, catalogue = synthetic_recs(), synthetic_catalogue()
    with pytest.raises(
        StoreError, match="does not implement online_store.skip_dedup false; publish with writer='feast'"
    ):
        writer.publish(recs, catalogue, settings)
    with pytest.raises(StoreError, match="writer must be 'fast' or 'feast', got 'raw'"):
        writer.publish(recs, catalogue, settings, writer="raw")  # type: ignore[arg-type]
    assert redis_dump(settings) == {} and not (repo / "data" / f"{layout.USER_VIEW}.parquet").exists()
    assert writer.publish(recs, catalogue, settings, writer="feast")["users"] == N_USERS
    assert list(verify.read_lists([1], settings)["item_ids"][0]) == recs["item_ids"][0].tolist()


def test_feast_reads_every_field_the_fast_writer_wrote(own_redis: Settings, histories: pd.DataFrame) -> None:
    feast_repo.apply(own_redis)
    recs, catalogue = synthetic_recs(), synthetic_catalogue()
    writer.publish(recs, catalogue, own_redis, histories, writer="fast")
    fs = feast_repo.feature_store(own_redis)
    refs = [f"{layout.USER_VIEW}:{f}" for f in layout.USER_FEATURES]
    refs += [f"{layout.HISTORY_VIEW}:{f}" for f in layout.HISTORY_FEATURES]
    rows = [{"user_id": int(u)} for u in recs["user_id"]]
    served = fs.get_online_features(features=refs, entity_rows=rows, full_feature_names=True).to_dict()
    history = dict(zip(histories["user_id"], histories["movie_ids"]))
    for i, want in enumerate(recs.itertuples()):
        assert served["user_recommendations__item_ids"][i] == want.item_ids.tolist()
        assert served["user_recommendations__scores"][i] == want.scores.tolist()  # float32, exact
        assert served["user_recommendations__model_version"][i] == "7"
        assert served["user_recommendations__data_version"][i] == "d41d8cd"
        expected = history.get(want.user_id)
        assert served["user_history__movie_ids"][i] == (None if expected is None else expected.tolist())
        assert served["user_history__data_version"][i] == (None if expected is None else "d41d8cd")
    assert BIG_MOVIE_ID in served["user_recommendations__item_ids"][0]
    assert (
        served["user_history__movie_ids"][0] == []
        and len(served["user_history__movie_ids"][1]) == LONG_HISTORY
    )
    movies = [{"movie_id": int(m)} for m in catalogue["movie_id"]]
    titles = fs.get_online_features(features=[f"{layout.MOVIE_VIEW}:title"], entity_rows=movies).to_dict()[
        "title"
    ]
    assert titles == catalogue["title"].tolist() and "Amélie 7 (2001)" in titles
