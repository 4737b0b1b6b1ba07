"""The HTTP pyfunc (recsys.serving.models) against a real Redis: a source per user, bounded round trips.

A small real bundle (an untrained SASRec tower over a synthetic catalogue, written by
recsys.tracking.two_tower.write_bundle) and synthetic lists, histories and titles published through
recsys.online.writer into a per-test embedded Redis. The model is loaded as MLflow loads it
(``load_context`` with the bundle artefact), with the store's connection in the environment.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.config import DataConfig, Settings, load_settings
from recsys.data.prepared import prepare
from recsys.models.two_tower.training import new_model
from recsys.online import feast_repo, writer
from recsys.online import reader as lookup
from recsys.ops import redis_server
from recsys.runtime.scoring import inputs_from_histories, score_users
from recsys.serving.models import RecommenderModel
from recsys.tracking.two_tower import write_bundle

pytestmark = pytest.mark.integration

N_MOVIES, BUNDLE_K = 40, 20
STORED = list(range(1, 61))  # users with a stored list
HISTORY_ONLY = list(range(101, 126))  # a stored history, no list: scored by the graph
FOREIGN_HISTORY = 130  # a stored history of movies the model does not know: popular
UNKNOWN = list(range(9001, 9015))  # nothing stored
OUTSIDE = 999  # a movie the store has a title for and the bundle does not
STAMP = pd.Timestamp("2026-11-24 02:00", tz="UTC")


def title(movie_id: int) -> str:
    return f"Amélie {movie_id} (2001)" if movie_id % 7 == 0 else f"Movie {movie_id} (1999)"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    rows = [
        (user, int(movie), 5.0, 1_000_000_000 + t)
        for user in range(1, 61)
        for t, movie in enumerate(rng.choice(np.arange(1, N_MOVIES + 1), 12, replace=False))
    ]
    ratings = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
    movies = pd.DataFrame(
        {
            "movie_id": range(1, N_MOVIES + 1),
            "title": [title(m) for m in range(1, N_MOVIES + 1)],
            "genres": "Drama",
        }
    )
    prepared = prepare(ratings, movies, DataConfig(min_user_interactions=3, min_item_interactions=3))
    settings = load_settings(
        ["model.embedding_dim=8", "model.history_length=4", f"score.k={BUNDLE_K}"], env={}
    )
    torch.manual_seed(0)
    model = new_model(prepared, settings).eval()
    return write_bundle(model, prepared, settings, tmp_path_factory.mktemp("serving") / "bundle")


def stored_recs(rng: np.random.Generator) -> pd.DataFrame:
    """A list per STORED user, best first; the first user's holds OUTSIDE (a list of another version)."""
    movies = np.arange(1, N_MOVIES + 1)
    items = [rng.choice(movies, BUNDLE_K, replace=False).astype("int64") for _ in STORED]
    items[0][0] = OUTSIDE
    scores = [np.sort(rng.normal(size=BUNDLE_K)).astype("float32")[::-1] for _ in STORED]
    return pd.DataFrame(
        {
            "user_id": np.array(STORED, dtype="int64"),
            "item_ids": items,
            "scores": scores,
            "model_version": "1",
            "data_version": "d1",
            "event_timestamp": STAMP,
        }
    )


def stored_histories(rng: np.random.Generator) -> pd.DataFrame:
    users = [*HISTORY_ONLY, FOREIGN_HISTORY]
    movies = np.arange(1, N_MOVIES + 1)
    movie_ids = [rng.choice(movies, 6, replace=False).astype("int64") for _ in HISTORY_ONLY]
    movie_ids.append(np.array([5001, 5002], dtype="int64"))
    return pd.DataFrame(
        {
            "user_id": np.array(users, dtype="int64"),
            "movie_ids": movie_ids,
            "data_version": "d1",
            "event_timestamp": STAMP,
        }
    )


@pytest.fixture
def published(own_redis: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(1)
    recs, histories = stored_recs(rng), stored_histories(rng)
    ids = [*range(1, N_MOVIES + 1), OUTSIDE]
    catalogue = pd.DataFrame({"movie_id": np.array(ids, dtype="int64"), "title": [title(m) for m in ids]})
    feast_repo.apply(own_redis)
    writer.publish(recs, catalogue, own_redis, histories)
    return recs, histories


@pytest.fixture
def served(bundle_dir: Path, own_redis: Settings, monkeypatch: pytest.MonkeyPatch) -> RecommenderModel:
    """The pyfunc as ``mlflow models serve`` loads it, with only this test's store in the environment."""
    for name in [n for n in os.environ if n.startswith("RECSYS") or n == "REDIS_CONNECTION_STRING"]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RECSYS_HOME", str(own_redis.paths.home))
    monkeypatch.setenv("REDIS_CONNECTION_STRING", own_redis.redis_connection)
    model = RecommenderModel()
    model.load_context(SimpleNamespace(artifacts={"bundle": str(bundle_dir)}))
    return model


def counted(calls: list[int], fn):  # noqa: ANN001, ANN201 - wraps any callable
    """``fn``, appending to ``calls`` on each call."""

    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return fn(*args, **kwargs)

    return wrapper


def request(rng: np.random.Generator) -> pd.DataFrame:
    """100 users of every kind, shuffled, each with its own k in 1..BUNDLE_K."""
    users = rng.permutation([*STORED, *HISTORY_ONLY, FOREIGN_HISTORY, *UNKNOWN])
    assert len(users) == 100
    return pd.DataFrame({"user_id": users, "k": rng.integers(1, BUNDLE_K + 1, size=len(users))})


def test_a_mixed_request_answers_each_user_from_its_source_in_request_order(
    served: RecommenderModel, published: tuple[pd.DataFrame, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    recs, histories = published
    bundle = served.bundle
    frame = request(np.random.default_rng(2))
    round_trips: list[int] = []
    graph_calls: list[int] = []
    monkeypatch.setattr(lookup, "_hmget_all", counted(round_trips, lookup._hmget_all))
    monkeypatch.setattr(lookup, "_hmget_unblocked", counted(round_trips, lookup._hmget_unblocked))
    monkeypatch.setattr(bundle.retriever, "recommend", counted(graph_calls, bundle.retriever.recommend))

    rows = served.predict(None, frame)

    assert [r["user_id"] for r in rows] == frame["user_id"].tolist()
    assert all(type(r["user_id"]) is int for r in rows)
    # lists, then histories of those without one; the movie outside the bundle adds the titles' trip
    assert len(round_trips) == 3 and len(graph_calls) == 1
    stored = dict(zip(recs["user_id"], zip(recs["item_ids"], recs["scores"])))
    history = dict(zip(histories["user_id"], histories["movie_ids"]))
    inputs = inputs_from_histories(bundle, HISTORY_ONLY, [history[u].tolist() for u in HISTORY_ONLY])
    graph = score_users(bundle, inputs, "", "").set_index("user_id")
    popular = bundle.movie_ids[bundle.popular].tolist()
    for row, k in zip(rows, frame["k"]):
        user, triples = row["user_id"], row["recommendations"]
        assert len(triples) == k
        assert all(t[2] == title(t[0]) for t in triples)
        if user in STORED:
            items, scores = stored[user]
            assert row["source"] == "online_store"
            assert triples == [[int(m), float(s), title(m)] for m, s in zip(items[:k], scores[:k])]
        elif user in HISTORY_ONLY:
            assert row["source"] == "computed"
            assert [t[0] for t in triples] == graph.loc[user, "item_ids"][:k].tolist()
            want = graph.loc[user, "scores"][:k].tolist()
            assert [t[1] for t in triples] == pytest.approx(want, abs=1e-5)
            assert not {t[0] for t in triples} & set(history[user].tolist())
        else:  # a history of unknown movies excludes nothing the model knows
            assert row["source"] == "popular"
            assert [t[0] for t in triples] == popular[:k]
    assert rows[frame["user_id"].tolist().index(STORED[0])]["recommendations"][0][2] == title(OUTSIDE)


def test_stored_lists_hold_the_first_k_and_none_for_a_user_without_one(
    published: tuple[pd.DataFrame, pd.DataFrame], own_redis: Settings
) -> None:
    recs, _ = published
    lists = lookup.stored_lists([STORED[1], UNKNOWN[0], HISTORY_ONLY[0]], 3, own_redis)
    assert list(lists) == [STORED[1], UNKNOWN[0], HISTORY_ONLY[0]]
    assert lists[UNKNOWN[0]] is None and lists[HISTORY_ONLY[0]] is None
    items, scores = recs["item_ids"][1].tolist(), recs["scores"][1].astype(float).tolist()
    assert lists[STORED[1]] == (items[:3], scores[:3])
    assert lookup.stored_lists([STORED[1]], BUNDLE_K, own_redis)[STORED[1]] == (items, scores)
    named = lookup.titles([OUTSIDE, 7, 123_456], own_redis)
    assert named == {OUTSIDE: title(OUTSIDE), 7: title(7), 123_456: ""}


def test_stored_lists_take_one_round_trip(
    served: RecommenderModel, published: tuple[pd.DataFrame, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    round_trips: list[int] = []
    monkeypatch.setattr(lookup, "_hmget_all", counted(round_trips, lookup._hmget_all))
    monkeypatch.setattr(lookup, "_hmget_unblocked", counted(round_trips, lookup._hmget_unblocked))
    rows = served.predict(None, pd.DataFrame({"user_id": STORED[1:] + [STORED[1]]}))
    assert len(round_trips) == 1
    assert [r["source"] for r in rows] == ["online_store"] * len(STORED)
    assert all(len(r["recommendations"]) == 10 for r in rows)  # k defaults to 10
    assert rows[-1] == rows[0]  # a repeated user gets the same row


def test_redis_down_falls_back_with_one_warning_until_it_is_back(
    served: RecommenderModel,
    published: tuple[pd.DataFrame, pd.DataFrame],
    own_redis: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert redis_server.stop(own_redis)
    frame = request(np.random.default_rng(3))
    with caplog.at_level(logging.WARNING, logger="recsys.serving.models"):
        first = served.predict(None, frame)
        second = served.predict(None, frame)
    assert first == second
    # the SASRec tower needs a history: without the store everyone gets the popular list
    assert {r["source"] for r in first} == {"popular"}
    warnings = [r.getMessage() for r in caplog.records if r.name == "recsys.serving.models"]
    assert len(warnings) == 1 and "online store unavailable" in warnings[0]
    redis_server.start(own_redis)  # the lists survive the restart
    with caplog.at_level(logging.WARNING, logger="recsys.serving.models"):
        again = served.predict(None, frame)
    assert {r["source"] for r in again} == {"online_store", "computed", "popular"}
    assert "online store is back" in caplog.records[-1].getMessage()


def test_the_inputs_and_instances_layouts_are_answered_like_dataframe_split(
    served: RecommenderModel, published: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    want = served.predict(None, pd.DataFrame({"user_id": [STORED[0], UNKNOWN[0]], "k": [3, 2]}))
    # what MLflow's parser hands the model for {"inputs": {...}}, {"instances": [...]}
    columns = {"user_id": np.array([STORED[0], UNKNOWN[0]]), "k": np.array([3, 2])}
    rows = [
        {"user_id": np.array(STORED[0]), "k": np.array(3)},
        {"user_id": np.array(UNKNOWN[0]), "k": np.array(2)},
    ]
    assert served.predict(None, columns) == want == served.predict(None, rows)
    similar = served.predict(None, {"movie_id": np.array([1])})
    assert similar[0]["movie_id"] == 1  # routed to the similar-movies answer


def test_bad_requests_are_refused_without_a_stack_trace(
    served: RecommenderModel,
    published: tuple[pd.DataFrame, pd.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from mlflow.exceptions import MlflowException

    for frame, message in [
        (pd.DataFrame({"user_id": [1], "k": [BUNDLE_K + 1]}), f"k must be an integer in 1..{BUNDLE_K}"),
        (pd.DataFrame({"user_id": [10**29]}), "user_id must be an integer"),
        (pd.DataFrame({"user_id": [1], "genre": ["x"]}), "unknown column"),
        (pd.DataFrame({"user_id": pd.Series([], dtype="int64")}), "no rows"),
        (pd.DataFrame([[1, 2]], columns=["user_id", "user_id"]), "column 'user_id' appears more than once"),
    ]:
        with pytest.raises(MlflowException, match=message) as raised:
            served.predict(None, frame)
        assert raised.value.get_http_status_code() == 400
        assert "stack_trace" not in raised.value.serialize_as_json()

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(served, "_stored", broken)
    with caplog.at_level(logging.ERROR, logger="recsys.serving.models"):
        with pytest.raises(MlflowException, match="see the server log") as raised:
            served.predict(None, pd.DataFrame({"user_id": [1]}))
    assert raised.value.get_http_status_code() == 500
    assert "disk on fire" not in raised.value.serialize_as_json()
    assert "disk on fire" in caplog.text  # the traceback is in the server's log instead
