"""The time-split protocol (recsys.data.time_split): periods around the cut, the cold-start filter
counted over the training period only, new movies kept as unrankable, and the sample's figures."""

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pytest

from recsys.config import PROJECT_ROOT, DataConfig
from recsys.data.prepared import load_movies, load_ratings
from recsys.data.time_split import cut_of, new_movie_mask, open_catalogue, prepare_time_split, split_at
from recsys.data.views import SplitView
from recsys.errors import DataError

pytestmark = pytest.mark.unit
SAMPLE = PROJECT_ROOT / "data" / "ml-latest-small"
CFG = DataConfig(min_user_interactions=2, min_item_interactions=2)


def at(day: str, second: int = 0) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()) + second


def ratings(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])


def small() -> pd.DataFrame:
    rows = [
        # users 1-3 like movies 10 and 11 in January; user 3 also likes 12 once (cold: 1 positive)
        *[(u, m, 5.0, at("2020-01-05", u * 10 + m)) for u in (1, 2, 3) for m in (10, 11)],
        (3, 12, 4.0, at("2020-01-06")),
        (1, 13, 2.0, at("2020-01-07")),  # a rating below the threshold: not a positive
        (4, 10, 5.0, at("2020-01-08")),  # user 4: one positive, under min_user_interactions
        # validation window [2020-02-01, 2020-03-01): user 1 likes 12 (known to nobody's filter)
        (1, 12, 5.0, at("2020-02-10")),
        # test period from 2020-03-01: user 2 likes 12, then a brand-new movie 20; user 4 and a
        # user unseen before (5) like 11; the cold movie 12 got its second positive only after
        # training, so it stays new
        (2, 12, 4.5, at("2020-03-02")),
        (2, 20, 4.0, at("2020-03-03")),
        (4, 11, 5.0, at("2020-03-04")),
        (5, 11, 5.0, at("2020-03-05")),
        (3, 13, 4.0, at("2020-02-29", 86_399)),  # the last second before the cut: validation
    ]
    return ratings(rows)


def test_periods_around_the_cut_with_cold_start_counted_over_training_only():
    positives = small()[small()["rating"] >= CFG.rating_threshold]
    frame = split_at(positives, date(2020, 3, 1), 29, CFG)
    train = frame[frame["split"] == "train"]
    # training: users 1-3 (user 4 has one positive), movies 10 and 11 (12 had one training positive)
    assert set(train["user_id"]) == {1, 2, 3} and set(train["movie_id"]) == {10, 11}
    valid = frame[frame["split"] == "valid"]
    assert sorted(zip(valid["user_id"], valid["movie_id"])) == [(1, 12), (3, 13)]
    test = frame[frame["split"] == "test"]
    # every positive after the cut of a user known at training; users 4 and 5 were not
    assert sorted(zip(test["user_id"], test["movie_id"])) == [(2, 12), (2, 20)]


def test_new_movies_are_held_out_as_unrankable_and_told_apart():
    movies = pd.DataFrame({"movie_id": [10, 11, 12, 13, 20], "title": list("abcde"), "genres": ["x"] * 5})
    prepared = prepare_time_split(small(), movies, CFG, date(2020, 3, 1), 29)
    assert prepared.meta["protocol"] == "time-split" and prepared.meta["cut"] == "2020-03-01"
    assert prepared.catalogue["movie_id"].tolist() == [10, 11]
    assert prepared.catalogue["train_count"].tolist() == [3, 3]
    test = SplitView(prepared, "test").heldout
    assert test["movie_id"].tolist() == [12, 20] and (test["item_idx"] == -1).all()
    assert new_movie_mask(test).tolist() == [True, True]
    assert prepared.meta["n_test_unknown_items"] == 2 and prepared.meta["n_valid_unknown_items"] == 2
    # the test history and seen set are the positives before the cut (train + valid)
    assert SplitView(prepared, "test").seen[0].tolist() == [0, 1]
    # nothing after the cut leaks into the activity the scoring would read
    assert prepared.activity["timestamp"].max() < at("2020-03-01")


def test_a_cut_is_a_day_or_the_last_days_and_an_empty_period_is_refused():
    frame = small()
    assert cut_of(frame, date(2020, 3, 1)) == date(2020, 3, 1)
    assert cut_of(frame, last_days=5) == date(2020, 3, 1)  # last rating 2020-03-05: its day and 4 before
    with pytest.raises(ValueError, match="exactly one"):
        cut_of(frame)
    with pytest.raises(ValueError, match="last_days must be >= 1"):
        cut_of(frame, last_days=0)
    movies = pd.DataFrame({"movie_id": [10], "title": ["a"], "genres": ["x"]})
    with pytest.raises(DataError, match="leaves no test positives"):
        prepare_time_split(small(), movies, CFG, date(2020, 3, 10), 29)


def test_on_the_sample_most_positives_after_a_cut_are_for_new_movies():
    prepared = prepare_time_split(
        load_ratings(SAMPLE / "ratings.csv"), load_movies(SAMPLE / "movies.csv"), DataConfig(),
        date(2017, 9, 25), 365,
    )  # fmt: skip
    test = SplitView(prepared, "test").heldout
    new = new_movie_mask(test)
    # pinned: the last 365 days of the sample hold 706 positives of 19 users known a year before
    assert (len(test), test["user_idx"].nunique(), int(new.sum())) == (706, 19, 357)
    assert np.all(test["item_idx"].to_numpy()[~new] >= 0)


def test_the_open_catalogue_adds_every_rated_movie_and_reindexes_the_new_ones():
    movies = pd.DataFrame(
        {"movie_id": [10, 11, 12, 13, 20, 99], "title": list("abcdef"), "genres": ["x"] * 6}
    )
    prepared = prepare_time_split(small(), movies, CFG, date(2020, 3, 1), 29)
    opened = open_catalogue(prepared, movies, small())
    # the trained movies keep their indices; every other rated movie follows (99: never rated)
    assert opened.catalogue["movie_id"].tolist() == [10, 11, 12, 13, 20]
    assert opened.catalogue["item_idx"].tolist() == [0, 1, 2, 3, 4]
    assert opened.catalogue["train_count"].tolist() == [3, 3, 0, 0, 0]
    # the same held-out rows in the same order, the new movies now rankable
    test = SplitView(opened, "test").heldout
    assert test["movie_id"].tolist() == [12, 20] and test["item_idx"].tolist() == [2, 4]
    assert new_movie_mask(SplitView(prepared, "test").heldout).tolist() == [True, True]
    # user 1's validation positive of movie 12 is in the test history and seen set now
    user1 = int(prepared.users.set_index("user_id").loc[1, "user_idx"])
    assert SplitView(opened, "test").seen[user1].tolist() == [0, 1, 2]
