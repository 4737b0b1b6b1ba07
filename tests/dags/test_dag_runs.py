"""Each DAG run with ``dag.test()`` on the bundled sample, in chain order, on real DVC, GX, MLflow,
ONNX Runtime, Feast and Redis; then a corrupted sample and a retried publish.

The three runs share one module-scoped chain (ingest -> retrain -> nightly scoring in 3 shards);
the later tests build on what it served.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.config import PROJECT_ROOT
from recsys.errors import InvalidRequestError, StoreError, ValidationFailed
from recsys.online import verify
from recsys.online.reader import history, lookup_many
from recsys.online.writer import scored_at as scored_at_feature
from recsys.ops.registry import MOVIE_SIMILAR, Registry
from recsys.pipelines import ingest, score_nightly
from recsys.runtime.two_tower import ModelBundle

pytestmark = pytest.mark.dags


@pytest.fixture(scope="module")
def chain(run_dag, recsys_env):
    """The three DAGs, each run once with dag.test() in the order their assets chain them."""
    runs = {
        dag_id: run_dag(dag_id, **conf)
        for dag_id, conf in [
            ("recsys_ingest", {}),
            ("recsys_retrain", {}),
            ("recsys_score_nightly", {"shard_size": 250}),
        ]
    }
    print("\n" + ", ".join(f"{d}: {s:.1f}s" for d, (_, s) in runs.items()))
    return {dag_id: dag_run for dag_id, (dag_run, _) in runs.items()}


def first_lists(settings) -> Path:
    """The recommendations the chain's nightly run wrote (model v1, the first data version)."""
    return min(
        (settings.paths.home / "scores" / "v1").glob("*/recommendations.parquet"),
        key=lambda p: p.stat().st_mtime,
    )


def served(settings, user_ids=None, k: int = 100) -> dict:
    """What `recsys lookup` returns for each user (default: all 610): (movie_id, score), best first."""
    if user_ids is None:
        user_ids = pd.read_parquet(first_lists(settings), columns=["user_id"])["user_id"].tolist()
    return {u: [(m, s) for m, s, _ in triples] for u, triples in lookup_many(user_ids, k, settings).items()}


def states(airflow_db, dag_run) -> dict[str, list[str]]:
    return {t: [str(ti.state) for ti in tis] for t, tis in airflow_db.task_instances(dag_run).items()}


def test_ingest_validates_prepares_and_announces_the_data(chain, airflow_db):
    dag_run = chain["recsys_ingest"]
    assert dag_run.state == "success", states(airflow_db, dag_run)
    raw = airflow_db.xcom(dag_run, "validate_raw")
    assert raw["validation"]["suite"] == "ratings_raw" and raw["validation"]["rows"] == 100_836
    prepared = airflow_db.xcom(dag_run, "validate_prepared")
    assert prepared["n_users"] == 603 and prepared["n_train"] == 40_033
    assert prepared["validation"]["suite"] == "interactions"
    (event,) = airflow_db.asset_events("recsys_prepared_data")
    assert event == {
        "dataset": "ml-latest-small",
        "prepared_dir": prepared["prepared_dir"],
        "data_version": prepared["data_version"],
    }


def test_retrain_registers_promotes_and_announces_the_champion(chain, airflow_db, recsys_env):
    dag_run = chain["recsys_retrain"]
    assert dag_run.state == "success", states(airflow_db, dag_run)
    trained = airflow_db.xcom(dag_run, "train")
    assert trained["version"] == "1" and trained["best_epoch"] <= 6
    assert "mostpop_valid_ndcg_at_10" in trained["mostpop"]
    comparison = airflow_db.xcom(dag_run, "compare")
    assert comparison["champion"] is None and comparison["mostpop_metrics"]["ndcg_at_10"] == pytest.approx(
        trained["mostpop"]["mostpop_valid_ndcg_at_10"]
    )
    # the gate scored the version through its ONNX graph: the same figure as training's evaluation
    assert comparison["metrics"]["ndcg_at_10"] == pytest.approx(trained["valid"]["ndcg_at_10"], abs=1e-6)
    assert airflow_db.xcom(dag_run, "promotion_gate")["reason"].startswith("first version")
    assert str(Registry.open(recsys_env).resolve("champion").version) == "1"
    (event,) = airflow_db.asset_events("recsys_champion_model")
    assert event["model_version"] == "1" and event["previous"] is None
    link = airflow_db.xcom(dag_run, "train", key="_link_MlflowRunLink")
    assert link.endswith(f"/#/experiments/{trained['experiment_id']}/runs/{trained['run_id']}")


def test_retrain_mines_pairs_and_trains_the_similar_movies_model(chain, airflow_db, recsys_env):
    dag_run = chain["recsys_retrain"]
    mined = airflow_db.xcom(dag_run, "mine_pairs")
    assert mined["validation"]["suite"] == "pairs" and mined["validation"]["success"]
    counts = mined["counts"]
    assert (
        min(counts[kind][split] for kind in ("positive", "hard_negative") for split in counts["queries"]) > 0
    )
    assert mined["pairs_version"].endswith(".dir")  # tracked by DVC like the prepared data
    trained = airflow_db.xcom(dag_run, "train_similar")
    assert trained["version"] == "1" and trained["epochs"] <= 3
    assert trained["valid"]["recall_at_10"] > trained["genre_valid"]["recall_at_10"]
    # it ran after promotion_gate and started from that champion's item vectors
    assert trained["init_from"] == "two_tower v1"
    gate = airflow_db.xcom(dag_run, "similar_gate")
    assert gate["promoted"] and gate["metrics"]["recall_at_10"] == pytest.approx(
        trained["valid"]["recall_at_10"]
    )
    assert gate["metrics"]["recall_at_10"] > gate["two_tower_metrics"]["recall_at_10"]
    assert str(Registry.open(recsys_env, MOVIE_SIMILAR).resolve("champion").version) == "1"
    (event,) = airflow_db.asset_events("recsys_similar_model")
    assert event["model_version"] == "1"
    link = airflow_db.xcom(dag_run, "train_similar", key="_link_MlflowRunLink")
    assert link.endswith(f"/#/experiments/{trained['experiment_id']}/runs/{trained['run_id']}")


def test_nightly_publishes_every_movies_similar_movies(chain, airflow_db, recsys_env):
    from recsys.online.similar_reader import similar_many

    dag_run = chain["recsys_score_nightly"]
    scored = airflow_db.xcom(dag_run, "score_similar")
    published = airflow_db.xcom(dag_run, "publish_similar")
    # every movie of movies.csv: the 7,786 outside the trained catalogue from their features alone
    assert scored["movies"] == 9_742 and published["written"]["movies"] == 9_742
    assert scored["content"] == 9_742 - 1_956
    assert published["verified"]["checked"] > 0 and published["model_version"] == "1"
    lists = pd.read_parquet(scored["similar"]).set_index("movie_id")
    assert lists.loc[53, "source"] == "content" and lists.loc[1, "source"] == "collaborative"
    # the rare movies (rated in the release, too rarely to be trained) get a list but are in none
    rated = set(pd.read_csv(PROJECT_ROOT / "data" / "ml-latest-small" / "ratings.csv")["movieId"])
    rare = rated - set(lists.index[lists["source"] == "collaborative"])
    listed = {m for items in lists["movie_ids"] for m in items}
    assert len(rare) > 7_000 and rare <= set(lists.index) and not listed & rare
    toy_story = similar_many([1], scored["k"], recsys_env)[1]
    assert [m for m, _, _ in toy_story] == lists.loc[1, "movie_ids"].tolist()
    assert all(title for _, _, title in toy_story) and 1 not in [m for m, _, _ in toy_story]


def test_nightly_scores_in_shards_and_serves_every_user(chain, airflow_db, recsys_env):
    dag_run = chain["recsys_score_nightly"]
    assert dag_run.state == "success", states(airflow_db, dag_run)
    assert states(airflow_db, dag_run)["score_shard"] == ["success"] * 3  # 610 users / 250
    report = airflow_db.xcom(dag_run, "report")
    snapshot = airflow_db.xcom(chain["recsys_ingest"], "ingest")  # the raw snapshot's DVC version
    assert report["model_version"] == "1" and report["users"] == 610 and report["shards"] == 3
    assert report["mode"] == "full" and report["reason"] == "no lists are served yet"
    assert report["data_version"] == snapshot["data_version"] and report["rescored"] == 610
    assert report["written"]["users"] == 610 and report["feast_read_back"]["mismatches"] == 0
    recs = pd.read_parquet(report["recommendations"])
    assert recs["user_id"].is_unique and len(recs) == 610
    assert (recs["data_version"] == snapshot["data_version"]).all()
    lists = served(recsys_env, [1, 42, 610])
    by_user = recs.set_index("user_id")
    for user_id, pairs in lists.items():
        assert [m for m, _ in pairs] == by_user.loc[user_id, "item_ids"].tolist()


def test_corrupted_sample_stops_at_validation_and_serves_the_same_lists(
    chain, run_dag, airflow_db, recsys_env, tmp_path, monkeypatch
):
    bad = tmp_path / "ml-latest-small"
    shutil.copytree(PROJECT_ROOT / "data" / "ml-latest-small", bad)
    ratings = pd.read_csv(bad / "ratings.csv")
    ratings.loc[5, "rating"] = 7.0
    ratings.to_csv(bad / "ratings.csv", index=False)
    raw = airflow_db.xcom(chain["recsys_ingest"], "ingest")["raw_dir"]
    raw_before = (Path(raw) / "ratings.csv").read_bytes()
    before = served(recsys_env)
    monkeypatch.setenv("RECSYS__DATA__SOURCE", str(bad))
    real_validate, raised = ingest.validate_raw, []

    def spy(*args):
        try:
            return real_validate(*args)
        except Exception as exc:
            raised.append(exc)
            raise

    monkeypatch.setattr(ingest, "validate_raw", spy)

    dag_run, _ = run_dag("recsys_ingest", release=True)

    assert dag_run.state == "failed"
    assert [type(e) for e in raised] == [ValidationFailed] and "rating" in str(raised[0])
    # the failed task links to the suite's Data Docs page (an extra link computed as it ended)
    page = Path(raised[0].docs)
    assert page.is_file() and page.parent.name == "ratings_raw"
    assert airflow_db.xcom(dag_run, "ingest", key="data_docs") == str(page)
    assert airflow_db.xcom(dag_run, "ingest", key="_link_DataDocsLink") == page.as_uri()
    tis = airflow_db.task_instances(dag_run)
    (ingest_ti,) = tis["ingest"]
    assert ingest_ti.state == "failed" and ingest_ti.try_number == 1  # AirflowFailException: no retry
    assert {t: [ti.state for ti in v] for t, v in tis.items() if t != "ingest"} == {
        "choose": ["success"],
        "take_events": ["skipped"],  # the release branch was chosen
        **{t: ["upstream_failed"] for t in ("validate_raw", "prepare", "validate_prepared")},
    }
    assert len(airflow_db.asset_events("recsys_prepared_data")) == 1  # retraining is not triggered
    assert (Path(raw) / "ratings.csv").read_bytes() == raw_before
    assert served(recsys_env) == before
    assert str(Registry.open(recsys_env).resolve("champion").version) == "1"
    assert len(Registry.open(recsys_env).versions()) == 1
    last = (recsys_env.paths.home / "airflow" / "runs.jsonl").read_text().splitlines()[-1]
    assert '"state": "failed"' in last and dag_run.run_id in last  # recorded by the plugin's listener


def test_a_retried_publish_leaves_the_same_lists(chain, dagbag, run_dag, airflow_db, recsys_env, monkeypatch):
    before = served(recsys_env)
    real_publish, calls = score_nightly.publish, []

    def publish_then_drop_the_connection(settings, recommendations):
        calls.append(recommendations)
        result = real_publish(settings, recommendations)
        if len(calls) == 1:  # the worst case: everything written, then the task dies
            raise StoreError("Redis connection dropped after the write")
        return result

    monkeypatch.setattr(score_nightly, "publish", publish_then_drop_the_connection)
    publish_task = dagbag.dags["recsys_score_nightly"].task_dict["publish"]
    monkeypatch.setattr(publish_task, "retry_delay", timedelta(0))
    monkeypatch.setattr(publish_task, "retry_exponential_backoff", 0)

    # every user, so every list is written, in the first night's shards: the same batches, the same floats
    dag_run, _ = run_dag("recsys_score_nightly", full=True, shard_size=250)

    assert dag_run.state == "success", states(airflow_db, dag_run)
    (publish,) = airflow_db.task_instances(dag_run)["publish"]
    assert publish.try_number == 2 and len(calls) == 2 and calls[0] == calls[1]
    after = served(recsys_env)
    assert len(after) == 610 and after == before
    assert airflow_db.xcom(dag_run, "report")["written"]["users"] == 610


def test_the_listener_records_every_run_outcome(chain, recsys_env):
    import json

    path = recsys_env.paths.home / "airflow" / "runs.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    outcomes = [(line["dag_id"], line["state"]) for line in lines]
    assert outcomes[:3] == [
        ("recsys_ingest", "success"),
        ("recsys_retrain", "success"),
        ("recsys_score_nightly", "success"),
    ]
    assert all(line["run_id"] and line["seconds"] is not None for line in lines)


def test_new_ratings_reach_tonights_lists_without_a_retrain(chain, run_dag, airflow_db, recsys_env):
    """Drop a day of events where the export job would, run recsys_ingest (it takes the events)
    and recsys_score_nightly: only the two users in the events are re-scored."""
    old = pd.read_parquet(first_lists(recsys_env)).set_index("user_id")
    newly_rated = [int(m) for m in old.loc[1, "item_ids"][:3]]  # user 1 rates its top three
    new_user, new_movies = 100_000, [1, 260, 1196, 1210, 2571]  # Toy Story, Star Wars IV-VI, Matrix
    later = int(pd.read_csv(PROJECT_ROOT / "data" / "ml-latest-small" / "ratings.csv")["timestamp"].max()) + 1
    extra = [(1, m, 5.0, later + i) for i, m in enumerate(newly_rated)]
    extra += [(new_user, m, 4.5, later + i) for i, m in enumerate(new_movies)]
    events = recsys_env.paths.home / "events"  # the default event source
    events.mkdir(exist_ok=True)
    columns = ["userId", "movieId", "rating", "timestamp"]
    pd.DataFrame(extra, columns=columns).to_csv(events / "2018-09-25.csv", index=False)
    others = served(recsys_env, [42, 610])

    ingest_run, _ = run_dag("recsys_ingest")
    nightly_run, _ = run_dag("recsys_score_nightly")

    assert ingest_run.state == "success", states(airflow_db, ingest_run)
    assert states(airflow_db, ingest_run)["ingest"] == ["skipped"]  # the events branch, no release
    taken = airflow_db.xcom(ingest_run, "take_events")
    assert taken["night"] == 1 and taken["counts"]["new"] == 8 and taken["counts"]["users"] == 2
    assert nightly_run.state == "success", states(airflow_db, nightly_run)
    assert states(airflow_db, nightly_run)["evaluate_served"] == ["success"]  # its result is JSON
    assert len(Registry.open(recsys_env).versions()) == 1  # no retrain happened
    report = airflow_db.xcom(nightly_run, "report")
    assert report["model_version"] == "1" and report["data_version"] == taken["data_version"]
    assert report["mode"] == "incremental" and report["rescored_users"] == [1, new_user]
    assert report["data_version"] != old["data_version"].iat[0] and report["users"] == 611
    assert report["written"]["users"] == 2
    recs = pd.read_parquet(report["recommendations"]).set_index("user_id")
    served_now = {u: [m for m, _ in pairs] for u, pairs in served(recsys_env, [1, new_user]).items()}
    # the existing user's list holds none of the movies rated since training, and the rest is
    # re-ranked: the new positives changed the history the user vector is read from
    assert not set(served_now[1]) & set(newly_rated)
    without = [m for m in old.loc[1, "item_ids"].tolist() if m not in newly_rated]
    assert served_now[1][: len(without)] != without
    assert served(recsys_env, [42, 610]) == others  # nothing changed for them: not re-scored
    # the new user (unknown at training time) gets a personalised list, not the popular one
    assert recs.loc[new_user, "source"] == "model"
    bundle = ModelBundle.load(Registry.open(recsys_env).download_bundle("1")[1])
    items, _ = bundle.popular_for(bundle.item_index(new_movies), bundle.k)
    assert served_now[new_user] != bundle.movie_ids[items].tolist()
    assert not set(served_now[new_user]) & set(new_movies)
    # the recent history is in the feature store, newest last, with the data version on both views
    assert history(new_user, recsys_env) == new_movies
    assert history(1, recsys_env)[-3:] == newly_rated
    rows = verify.read_lists([1, new_user, 42], recsys_env)
    assert rows["data_version"].tolist() == [taken["data_version"]] * 2 + [old["data_version"].iat[0]]
    assert rows["model_version"].tolist() == ["1", "1", "1"]
    # each list says when it was scored: tonight for the re-scored users, last night for user 42
    scored_at = [
        recs.loc[1, "event_timestamp"],
        recs.loc[new_user, "event_timestamp"],
        old.loc[42, "event_timestamp"],
    ]
    assert rows["scored_at"].tolist() == scored_at_feature(pd.to_datetime(pd.Series(scored_at), utc=True))

    # two more nights: each evaluates the lists served the night before on the night's positives,
    # and re-scores only the users in its events
    for offset, (day, rows_of_night) in enumerate(
        (
            ("2018-09-26", [(42, 0, 5.0), (42, 1, 4.0), (610, 5, 2.0)]),  # hits in 42's list; 610 dislikes
            ("2018-09-27", [(1, 0, 4.5), (610, 2, 5.0)]),
        )
    ):
        lists = pd.read_parquet(report["recommendations"]).set_index("user_id")
        stamp = later + 1000 * (offset + 1)
        extra = [(u, int(lists.loc[u, "item_ids"][at]), r, stamp + at) for u, at, r in rows_of_night]
        pd.DataFrame(extra, columns=columns).to_csv(events / f"{day}.csv", index=False)
        before = served(recsys_env, [2, 3])
        assert run_dag("recsys_ingest")[0].state == "success"
        nightly_run, _ = run_dag("recsys_score_nightly")
        assert nightly_run.state == "success", states(airflow_db, nightly_run)
        report = airflow_db.xcom(nightly_run, "report")
        users = sorted({u for u, _, _ in rows_of_night})
        assert report["mode"] == "incremental" and report["rescored_users"] == users
        for user, movie, _, _ in extra:
            now = [m for m, _ in served(recsys_env, [user])[user]]
            assert movie not in now and now != lists.loc[user, "item_ids"].tolist()  # re-scored, rated
        assert served(recsys_env, [2, 3]) == before
        assert states(airflow_db, nightly_run)["evaluate_served"] == ["success"]
        evaluated = airflow_db.xcom(nightly_run, "evaluate_served")
        positives = {u: sum(r >= 4.0 for v, _, r in rows_of_night if v == u) for u in users}
        assert evaluated["users"] == sum(1 for n in positives.values() if n)
        assert evaluated["positives"] == sum(positives.values()) and evaluated["hit_rate_at_10"] == 1.0
    table = pd.read_csv(recsys_env.paths.home / "online" / "nights.csv")
    assert table["nights"].tolist() == ["1-1", "2-2", "3-3"]  # night 1 evaluated the full night's lists


def test_a_new_movie_is_scored_for_everyone_the_night_it_arrives_without_a_retrain(
    chain, run_dag, airflow_db, recsys_env
):
    """A movie added by the day's events with a title and genres, rated by a few users: only
    recsys_ingest and recsys_score_nightly run. The content item tower embeds it from its features:
    the night is full, the movie is in the served catalogue, and a user who rated nothing else gets
    a list read from its vector alone."""
    from recsys.online import publication
    from recsys.online.similar_reader import similar_many
    from recsys.ops import redis_server

    movie, title, genres = (
        300_001,
        "Star Wars: Episode X - The Last Jedi Returns (2019)",
        "Action|Adventure|Sci-Fi",
    )
    fans, newcomer = [1, 2, 3], 100_001  # the newcomer's only rating is of the new movie
    stamp = (
        int(pd.read_csv(PROJECT_ROOT / "data" / "ml-latest-small" / "ratings.csv")["timestamp"].max())
        + 90_000
    )
    events = recsys_env.paths.home / "events"
    events.mkdir(exist_ok=True)
    pd.DataFrame({"movieId": [movie], "title": [title], "genres": [genres]}).to_csv(
        events / "2018-09-28.movies.csv", index=False
    )
    rows = [(user, movie, 5.0, stamp + user) for user in [*fans, newcomer]]
    pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"]).to_csv(
        events / "2018-09-28.csv", index=False
    )
    versions = len(Registry.open(recsys_env).versions())

    assert run_dag("recsys_ingest")[0].state == "success"
    nightly_run, _ = run_dag("recsys_score_nightly")

    assert nightly_run.state == "success", states(airflow_db, nightly_run)
    assert len(Registry.open(recsys_env).versions()) == versions  # no retrain happened
    report = airflow_db.xcom(nightly_run, "report")
    assert report["mode"] == "full" and "movie(s) added" in report["reason"]
    assert report["users"] == report["rescored"]  # it may belong in anyone's list: everyone scored
    # the night's catalogue holds it (no training positive); suite recommendations passed with it
    folder = Path(report["recommendations"]).parent
    catalogue = pd.read_parquet(folder / "catalogue.parquet").set_index("movie_id")
    assert catalogue.loc[movie, "title"] == title and catalogue.loc[movie, "train_count"] == 0
    assert report["new_movies"] == int((catalogue["train_count"] == 0).sum()) > 1  # the tail too
    # the fans' histories hold it; the newcomer's list is read from its vector: a model list, no
    # longer the popular one, led by movies of its genres
    assert all(history(u, recsys_env)[-1] == movie for u in [*fans, newcomer])
    recs = pd.read_parquet(report["recommendations"]).set_index("user_id")
    assert recs.loc[newcomer, "source"] == "model"
    first = [m for m, _ in served(recsys_env, [newcomer], k=10)[newcomer]]
    genre_of = pd.read_csv(PROJECT_ROOT / "data" / "ml-latest-small" / "movies.csv", index_col="movieId")[
        "genres"
    ]
    assert sum(bool(set(genres.split("|")) & set(genre_of[m].split("|"))) for m in first) >= 8
    assert movie not in first
    # the night and `recsys status` count the new movies and the lists that hold one
    conn = redis_server.client(recsys_env.redis_connection)
    try:
        state = publication.status(recsys_env, conn)["served"]
    finally:
        conn.close()
    assert (state["new_movies"], state["lists_with_new"]) == (report["new_movies"], report["lists_with_new"])
    new = set(catalogue.index[catalogue["train_count"] == 0])
    assert report["lists_with_new"] == sum(bool(new & set(items.tolist())) for items in recs["item_ids"])

    # the fresh slots (score.fresh_slots) put it in lists: users whose histories are of its genres
    def of_its_genres(movies: list[int]) -> float:
        wanted = set(genres.split("|"))
        return float(np.mean([bool(wanted & set(genre_of.get(m, "").split("|"))) for m in movies]))

    holders = [u for u, items in recs["item_ids"].items() if movie in items.tolist() and u not in fans]
    of_kind = [u for u in holders if of_its_genres(recs.loc[u, "history"].tolist()) > 0.5]
    assert of_kind, f"{len(holders)} lists hold the new movie, none of a user of its genres"
    # similar movies: its own list, from its features, leads with movies of its genres, and movies
    # of its kind list it (recsys similar answers it)
    scored = airflow_db.xcom(nightly_run, "score_similar")
    similar_lists = pd.read_parquet(scored["similar"]).set_index("movie_id")
    assert similar_lists.loc[movie, "source"] == "content"
    own = [m for m, _, _ in similar_many([movie], 10, recsys_env)[movie]]
    assert sum(bool(set(genres.split("|")) & set(genre_of[m].split("|"))) for m in own) >= 8
    listing = [m for m, items in similar_lists["movie_ids"].items() if movie in items.tolist()]
    kin = [m for m in listing if of_its_genres([m]) == 1.0]
    assert len(kin) >= len(listing) / 2 > 0, (len(kin), len(listing))
    assert movie in [m for m, _, _ in similar_many([kin[0]], scored["k"], recsys_env)[kin[0]]]


def test_a_version_trained_with_another_k_is_scored_validated_and_served_with_its_own_k(
    chain, run_dag, airflow_db, recsys_env
):
    """Retrain with the DAG's `k` Param at 20 while `score.k` stays 100: every later night still
    validates, publishes and verifies, with the K recorded on the model version. Runs last: it
    moves the champion."""
    retrain, _ = run_dag("recsys_retrain", k=20, force_promotion=True, max_epochs=1)  # promoted by force
    assert retrain.state == "success", states(airflow_db, retrain)
    version = airflow_db.xcom(retrain, "train")["version"]
    assert str(Registry.open(recsys_env).resolve("champion").version) == version != "1"
    assert recsys_env.score.k == 100
    nightly, _ = run_dag("recsys_score_nightly", shard_size=250)
    assert nightly.state == "success", states(airflow_db, nightly)
    report = airflow_db.xcom(nightly, "report")
    assert report["model_version"] == version and report["lookups_checked"] > 0
    recs = pd.read_parquet(report["recommendations"])
    assert recs["item_ids"].map(len).eq(20).all()
    assert all(len(pairs) == 20 for pairs in served(recsys_env, [1, 42, 610], k=20).values())
    with pytest.raises(InvalidRequestError, match="k must be at most 20"):  # the version's K
        served(recsys_env, [1], k=21)


def test_a_canary_started_and_stopped_by_params_serves_its_slice_with_its_own_k(
    chain, run_dag, airflow_db, recsys_env
):
    """After the test above (champion K 20): version 1 (K 100) as a canary through the nightly
    run's Params. Its slice gets its 100-movie lists, everyone else the champion's 20, both pass
    validation; Param canary_stop ends it and the same run gives the slice back to the champion."""
    from recsys.online.reader import served_lookup
    from recsys.runtime.arms import Arms

    champion = str(Registry.open(recsys_env).resolve("champion").version)
    started, _ = run_dag("recsys_score_nightly", canary_version=1, canary_share=0.3, shard_size=250)
    assert started.state == "success", states(airflow_db, started)
    report = airflow_db.xcom(started, "report")
    assert "the users whose arm changed (no canary -> canary 1 on 30%)" in report["reason"]
    tags = Registry.open(recsys_env).resolve("canary").tags
    arms = Arms(champion, "1", 0.3, tags["canary_salt"])
    assert tags["canary_started_by"] == "airflow"
    recs = pd.read_parquet(report["recommendations"]).set_index("user_id")
    in_slice = arms.in_canary(recs.index.to_numpy())
    assert report["rescored"] == in_slice.sum() and 0.2 < in_slice.mean() < 0.4
    assert (recs["arm"] == "canary").tolist() == in_slice.tolist()
    assert recs.loc[in_slice, "item_ids"].map(len).eq(100).all()
    assert recs.loc[~in_slice, "item_ids"].map(len).eq(20).all()
    user = int(recs.index[in_slice][0])
    assert served_lookup(user, 50, recsys_env)[1:3] == ("canary", "1")

    stopped, _ = run_dag("recsys_score_nightly", canary_stop=True, shard_size=250)
    assert stopped.state == "success", states(airflow_db, stopped)
    assert Registry.open(recsys_env).alias_version("canary") is None
    report = airflow_db.xcom(stopped, "report")
    assert report["rescored"] == in_slice.sum()
    assert served_lookup(user, 20, recsys_env)[1:3] == ("champion", champion)
