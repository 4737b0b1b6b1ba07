"""Similar movies in the online store: both writers put the same bytes, Feast reads them back, the
fast lookup and the HTTP pyfunc serve them, and bad requests get one line naming the problem."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.config import Settings
from recsys.errors import DataError, InvalidRequestError, StoreError, UnknownMovieError
from recsys.online import feast_repo, similar_reader, verify, writer
from recsys.online import reader as lookup
from recsys.ops import redis_server
from recsys.serving.models import RecommenderModel
from tests.integration.test_serving import N_MOVIES, bundle_dir, served, title  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration
K = 5
STAMP = pd.Timestamp("2026-11-25 02:00", tz="UTC")


def similar_lists() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    movies = np.arange(1, N_MOVIES + 1)
    items = [rng.choice(movies[movies != m], K, replace=False).astype("int64") for m in movies]
    items[-1][0] = 2**40  # an id past 2**32 on the wire
    scores = [np.sort(rng.random(K)).astype("float32")[::-1] for _ in movies]
    return pd.DataFrame(
        {
            "movie_id": movies.astype("int64"),
            "movie_ids": items,
            "scores": scores,
            # the last movie's list comes from its features alone (a movie with no ratings)
            "source": ["collaborative"] * (N_MOVIES - 1) + ["content"],
            "model_version": "2",
            "data_version": "p1",
            "event_timestamp": STAMP,
        }
    )


def dump(settings: Settings) -> dict[bytes, dict[bytes, bytes]]:
    conn = redis_server.client(settings.redis_connection)
    try:
        return {key: conn.hgetall(key) for key in conn.scan_iter() if not key.startswith(b"recsys:publ")}
    finally:
        conn.close()


@pytest.fixture
def published_similar(own_redis: Settings) -> pd.DataFrame:
    lists = similar_lists()
    feast_repo.apply(own_redis)
    catalogue = pd.DataFrame(
        {"movie_id": np.arange(1, N_MOVIES + 1), "title": [title(m) for m in range(1, 41)]}
    )
    writer.publish(
        pd.DataFrame(
            {
                "user_id": [1],
                "item_ids": [np.array([1, 2])],
                "scores": [np.array([0.5, 0.4], dtype="float32")],
                "model_version": "1",
                "data_version": "d1",
                "event_timestamp": STAMP,
            }
        ),
        catalogue,
        own_redis,
    )
    written = writer.publish_similar(lists, own_redis)
    assert written["movies"] == N_MOVIES and written["writer"] == "fast"
    return lists


def test_the_fast_writer_writes_the_bytes_feast_writes(own_redis: Settings) -> None:
    feast_repo.apply(own_redis)
    lists = similar_lists()
    contents = {}
    for kind in ("feast", "fast"):
        redis_server.client(own_redis.redis_connection).flushdb()
        writer.publish_similar(lists, own_redis, writer=kind)  # type: ignore[arg-type]
        contents[kind] = dump(own_redis)
    assert contents["fast"] == contents["feast"] and len(contents["fast"]) == N_MOVIES


def test_feast_and_the_fast_lookup_read_back_what_was_published(
    published_similar: pd.DataFrame, own_redis: Settings
) -> None:
    got = verify.read_similar([1, 40, 77], own_redis)
    assert got["movie_id"].tolist() == [1, 40, 77]
    assert got["movie_ids"].iloc[0] == published_similar["movie_ids"].iloc[0].tolist()
    assert got["movie_ids"].iloc[1][0] == 2**40 and got["title"].iloc[0] == title(1)
    assert got["movie_ids"].iloc[2] is None  # no list stored for movie 77
    assert verify.verify_similar(published_similar, own_redis, 10) == {"checked": 10, "mismatches": 0}
    triples = similar_reader.similar(1, 3, own_redis)
    want = published_similar.iloc[0]
    assert [m for m, _, _ in triples] == want["movie_ids"][:3].tolist()
    assert [s for _, s, _ in triples] == pytest.approx(want["scores"][:3].tolist())
    assert [t for _, _, t in triples] == [title(int(m)) for m in want["movie_ids"][:3]]
    second = similar_reader.similar_many([1, 2], 2, own_redis)[2]
    assert second[0][0] == published_similar["movie_ids"].iloc[1][0]


def test_a_changed_store_fails_the_read_back(published_similar: pd.DataFrame, own_redis: Settings) -> None:
    changed = published_similar.copy()
    changed.at[0, "model_version"] = "3"
    with pytest.raises(StoreError, match="movie 1, field model_version"):
        verify.verify_similar(changed, own_redis, len(changed))


def test_bad_lookups_get_one_line_naming_the_problem(
    published_similar: pd.DataFrame, own_redis: Settings
) -> None:
    with pytest.raises(UnknownMovieError, match="movie 77 is not in the online store's catalogue"):
        similar_reader.similar(77, 3, own_redis)
    with pytest.raises(InvalidRequestError, match="k must be at most 5, the number of similar movies stored"):
        similar_reader.similar(1, 6, own_redis)
    with pytest.raises(InvalidRequestError, match="movie_id must be an integer"):
        similar_reader.similar(0, 3, own_redis)
    with pytest.raises(DataError, match="duplicate movie_id"):
        writer.publish_similar(pd.concat([published_similar, published_similar.iloc[:1]]), own_redis)


def test_http_answers_movie_id_requests_from_the_store(
    served: RecommenderModel,  # noqa: F811 - the fixture imported above
    published_similar: pd.DataFrame,
    own_redis: Settings,
) -> None:
    from mlflow.exceptions import MlflowException

    rows = served.predict(None, pd.DataFrame({"movie_id": [2, 1, 2], "k": [2, 5, 1]}))
    assert [r["movie_id"] for r in rows] == [2, 1, 2] and {r["source"] for r in rows} == {"collaborative"}
    assert [len(r["similar"]) for r in rows] == [2, 5, 1]
    assert [m for m, _, _ in rows[1]["similar"]] == published_similar["movie_ids"].iloc[0].tolist()
    # a movie with no ratings says so: its list comes from its features, not from its fans
    (content,) = served.predict(None, pd.DataFrame({"movie_id": [N_MOVIES], "k": [2]}))
    assert content["source"] == "content" and len(content["similar"]) == 2
    answer = similar_reader.similar_answers([N_MOVIES, 1], 2, own_redis)
    assert [a.source for a in answer.values()] == ["content", "collaborative"]
    for frame, message in [
        (pd.DataFrame({"movie_id": [1], "k": [6]}), "k must be at most 5"),
        (pd.DataFrame({"movie_id": [1], "user_id": [1]}), "unknown column"),
        (pd.DataFrame({"movie_id": ["x"]}), "movie_id must be an integer"),
    ]:
        with pytest.raises(MlflowException, match=message) as raised:
            served.predict(None, frame)
        assert raised.value.get_http_status_code() == 400


def test_a_catalogue_movie_without_a_list_is_named_as_such_and_does_not_fail_a_batch(
    served: RecommenderModel,  # noqa: F811 - the fixture imported above
    published_similar: pd.DataFrame,
    own_redis: Settings,
) -> None:
    conn = redis_server.client(own_redis.redis_connection)
    conn.hdel(lookup.entity_key("movie_id", 3), *similar_reader.SIMILAR_FIELDS)  # movie 3 keeps its title
    with pytest.raises(UnknownMovieError, match="movie 3 is in the catalogue but has no similar-movies list"):
        similar_reader.similar(3, 2, own_redis)
    with pytest.raises(UnknownMovieError) as raised:
        similar_reader.similar(77, 2, own_redis)
    assert "check the id" in str(raised.value) and "in the catalogue but" not in str(raised.value)
    found = similar_reader.similar_or_reasons([1, 3, 77], 2, own_redis)
    assert [m for m, _, _ in found[1]] == published_similar["movie_ids"].iloc[0][:2].tolist()
    assert "run the nightly publish" in found[3] and "not in the online store's catalogue" in found[77]
    rows = served.predict(None, pd.DataFrame({"movie_id": [3, 1, 77], "k": [2, 2, 2]}))
    assert [r["source"] for r in rows] == ["none", "collaborative", "none"]
    assert rows[0]["similar"] == [] == rows[2]["similar"] and len(rows[1]["similar"]) == 2
    assert "published before it arrived" in rows[0]["reason"] and "check the id" in rows[2]["reason"]
    assert "reason" not in rows[1]


def test_movie_requests_with_redis_down_are_a_503_naming_the_store(
    served: RecommenderModel,  # noqa: F811 - the fixture imported above
    published_similar: pd.DataFrame,
    own_redis: Settings,
) -> None:
    from mlflow.exceptions import MlflowException

    assert redis_server.stop(own_redis)
    with pytest.raises(MlflowException, match="unreachable") as raised:
        served.predict(None, pd.DataFrame({"movie_id": [1, 2]}))
    assert raised.value.get_http_status_code() == 503
    assert own_redis.redis_address in raised.value.message
    assert "stack_trace" not in raised.value.serialize_as_json()
    # users in the same outage still get an answer (the model or the popular list)
    assert {r["source"] for r in served.predict(None, pd.DataFrame({"user_id": [1]}))} == {"popular"}


def test_the_similar_lists_status_says_version_date_and_how_many_movies(
    published_similar: pd.DataFrame, own_redis: Settings
) -> None:
    from recsys.online import publication

    conn = redis_server.client(own_redis.redis_connection)
    conn.hdel(lookup.entity_key("movie_id", 3), *similar_reader.SIMILAR_FIELDS)  # a title without a list
    state = publication.similar_status(conn)
    assert state == {
        "movies": N_MOVIES - 1,
        "content": 1,
        "model_versions": {"2": N_MOVIES - 1},
        "data_versions": {"p1": N_MOVIES - 1},
        "scored_at": STAMP.isoformat(timespec="seconds"),
    }
    conn.flushdb()
    assert publication.similar_status(conn) == {
        "movies": 0,
        "content": 0,
        "model_versions": {},
        "data_versions": {},
        "scored_at": None,
    }


def test_a_blocked_movie_leaves_the_similar_lists_at_once(
    published_similar: pd.DataFrame, own_redis: Settings
) -> None:
    from recsys.online import blocklist

    stored = published_similar.iloc[0]["movie_ids"].tolist()
    blocklist.block(stored[1], own_redis, reason="withdrawn")
    assert [m for m, _, _ in similar_reader.similar(1, 3, own_redis)] == [stored[0], *stored[2:4]]
    with pytest.raises(InvalidRequestError, match="less any blocked movies"):
        similar_reader.similar(1, K, own_redis)
    blocklist.unblock(stored[1], own_redis)
    assert [m for m, _, _ in similar_reader.similar(1, K, own_redis)] == stored[:K]
