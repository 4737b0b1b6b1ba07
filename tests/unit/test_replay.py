"""The replay's pure parts on planted data: a release split into a stream, the most-popular arm,
and the summary over nights."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest

from recsys.data import stream
from recsys.errors import DataError
from recsys.pipelines.replay import mostpop_lists, summarise

pytestmark = pytest.mark.unit


def _at(day: str, hour: int = 12) -> int:
    return int(datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC).timestamp())


def test_a_release_splits_into_an_initial_release_and_steps_with_their_new_movies(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    rows = [
        (1, 10, 4.0, _at("2020-01-01")),
        (2, 10, 3.0, _at("2020-01-02")),
        (1, 11, 5.0, _at("2020-01-03")),  # movie 11 first rated in step 1
        (2, 12, 4.0, _at("2020-01-05", 0)),  # movie 12, first second of step 2
        (3, 11, 2.0, _at("2020-01-08")),  # after the last step: not delivered
    ]
    pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"]).to_csv(
        source / "ratings.csv", index=False
    )
    movies = pd.DataFrame({"movieId": [10, 11, 12, 13], "title": list("abcd"), "genres": ["Drama"] * 4})
    movies.to_csv(source / "movies.csv", index=False)
    played = stream.split(source, date(2020, 1, 3), steps=2, step_days=2, out=tmp_path / "out")
    release = pd.read_csv(played.release / "ratings.csv")
    assert release["movieId"].tolist() == [10, 10]
    assert pd.read_csv(played.release / "movies.csv")["movieId"].tolist() == [10, 13]  # 13: never rated
    (day1, ratings1, movies1), (day2, ratings2, movies2) = played.steps
    assert (day1, day2) == (date(2020, 1, 3), date(2020, 1, 5))
    assert pd.read_csv(ratings1)["movieId"].tolist() == [11] and pd.read_csv(movies1)["movieId"].tolist() == [
        11
    ]
    assert pd.read_csv(ratings2)["movieId"].tolist() == [12] and pd.read_csv(movies2)["movieId"].tolist() == [
        12
    ]
    assert [p.name for p in (ratings1, movies1)] == ["2020-01-03.csv", "2020-01-03.movies.csv"]
    with pytest.raises(DataError, match="leaves nothing to replay"):
        stream.split(source, date(2021, 1, 1), 1, 1, tmp_path / "late")


def test_mostpop_counts_positives_and_removes_what_the_user_rated():
    ratings = pd.DataFrame(
        [(1, 10, 5.0), (2, 10, 4.0), (3, 11, 4.5), (4, 11, 4.0), (5, 12, 4.0), (6, 13, 2.0), (1, 12, 1.0)],
        columns=["user_id", "movie_id", "rating"],
    )
    lists = mostpop_lists(ratings, [1, 7], threshold=4.0, k=2)
    assert lists[7].tolist() == [10, 11]  # 10 and 11 have two positives each: ties by movie id
    assert lists[1].tolist() == [11]  # user 1 rated 10 and 12; 13 has no positive


def test_the_summary_pools_users_over_nights_and_pairs_the_arms():
    metrics = ("hit_rate_at_10", "recall_at_10", "recall_at_100", "ndcg_at_10")
    rows = [  # night 1: one user, night 2: three; fresh hits 2 of 4, frozen 1 of 4 (user 5 only)
        (1, 5, "fresh", 1.0),
        (1, 5, "frozen", 1.0),
        (2, 6, "fresh", 1.0),
        (2, 6, "frozen", 0.0),
        (2, 7, "fresh", 0.0),
        (2, 7, "frozen", 0.0),
        (2, 8, "fresh", 0.0),
        (2, 8, "frozen", 0.0),
    ]
    per_user = pd.DataFrame(
        [
            {"night": n, "user_id": u, "arm": a, "positives": 1, **dict.fromkeys(metrics, v)}
            for n, u, a, v in rows
        ]
    )
    summary = summarise(per_user)
    fresh, frozen = summary["fresh"], summary["frozen"]
    assert fresh["nights"] == 2 and fresh["users"] == 4 and fresh["hit_rate_at_10"] == 0.5
    assert frozen["hit_rate_at_10"] == 0.25 and np.isclose(frozen["ndcg_at_10"], 0.25)
    assert 0.0 <= fresh["hit_rate_at_10_low"] <= 0.5 <= fresh["hit_rate_at_10_high"] <= 1.0
    assert frozen["fresh_minus_frozen_hit_rate_at_10"] == 0.25  # user 6 on night 2
    assert 0.0 <= frozen["fresh_minus_frozen_hit_rate_at_10_low"] <= 0.25
    assert "fresh_minus_fresh_hit_rate_at_10" not in fresh


def test_the_replay_plot_adds_the_canarys_evidence_panel_and_survives_a_night_without_evidence(tmp_path):
    import matplotlib.pyplot as plt

    from recsys.tracking.plots import plot_replay

    rows = pd.DataFrame(
        [
            {"night": n, "arm": arm, **{f"{m}{s}": 0.3 for m in ("hit_rate_at_10", "recall_at_100")
                                        for s in ("", "_low", "_high")}}
            for n in (1, 2, 3) for arm in ("fresh", "frozen", "mostpop")
        ]
    )  # fmt: skip
    keys = ("hit_rate_at_10_diff", "hit_rate_at_10_diff_low", "hit_rate_at_10_diff_high")
    judged = [
        {"night": 2, **dict.fromkeys(keys)},  # no evidence yet: a gap, not an error
        {"night": 3, **dict(zip(keys, (-0.1, -0.2, 0.0)))},
    ]
    canary = {
        "scenario": {"kind": "worse"},
        "started": {"night": 1, "version": "2"},
        "nights": judged,
        "decision": {"night": 3, "action": "roll_back"},
    }
    plain = plt.imread(plot_replay(rows, tmp_path / "plain.png"))
    with_canary = plt.imread(plot_replay(rows, tmp_path / "canary.png", canary, 0.01))
    assert with_canary.shape[1] > 1.3 * plain.shape[1]  # a third panel beside the two
