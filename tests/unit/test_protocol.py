"""The evaluation protocol of DESIGN.md, step by step, and the pinned ml-latest-small figures."""

import numpy as np
import pandas as pd
import pytest

from recsys.config import PROJECT_ROOT, DataConfig
from recsys.data.prepared import (
    filter_positives,
    index_splits,
    load_movies,
    load_prepared,
    load_ratings,
    prepare,
    save_prepared,
    split_by_time,
)
from recsys.data.views import seen_lists
from recsys.errors import DataError

pytestmark = pytest.mark.unit
SAMPLE = PROJECT_ROOT / "data" / "ml-latest-small"


def ratings(rows):
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])


def test_positives_and_cold_start_counted_once():
    # user 1: 5 positives; user 2: 4 positives -> dropped; item 99 has 1 positive -> dropped.
    rows = [(1, m, 5.0, m) for m in (10, 11, 12, 13, 99)] + [(1, 14, 3.5, 1)]
    rows += [(2, m, 4.0, m) for m in (10, 11, 12, 13)]
    rows += [(u, m, 4.5, 1) for u in (3, 4, 5) for m in (10, 11, 12, 13, 14)]
    cfg = DataConfig(min_user_interactions=5, min_item_interactions=5)
    kept = filter_positives(ratings(rows), cfg)
    assert (kept["rating"] >= 4.0).all()
    assert 2 not in set(kept["user_id"])
    assert 99 not in set(kept["movie_id"])
    # item 14 has 3 positives (users 3-5): below 5 -> dropped although user 1 rated it 3.5.
    assert 14 not in set(kept["movie_id"])
    # counted once over all positives: item 10 keeps its count of 5 (users 1-5) although user 2 is dropped
    assert 10 in set(kept["movie_id"])


def test_split_latest_is_test_ties_broken_by_movie_id():
    rows = [(1, 30, 5.0, 100), (1, 20, 5.0, 100), (1, 10, 5.0, 50), (1, 40, 5.0, 10)]
    split = split_by_time(ratings(rows))
    by_movie = dict(zip(split["movie_id"], split["split"]))
    # order: 40 (t=10), 10 (t=50), 20 (t=100), 30 (t=100, tie -> larger movie id later)
    assert by_movie == {40: "train", 10: "train", 20: "valid", 30: "test"}


def test_users_with_two_or_fewer_positives_stay_in_train():
    rows = [(1, 10, 5.0, 1), (1, 11, 5.0, 2), (2, 10, 5.0, 1), (2, 11, 5.0, 2), (2, 12, 5.0, 3)]
    split = split_by_time(ratings(rows))
    assert set(split[split["user_id"] == 1]["split"]) == {"train"}
    assert sorted(split[split["user_id"] == 2]["split"]) == ["test", "train", "valid"]


def test_heldout_items_missing_from_train_are_kept_as_misses():
    rows = [
        (1, 10, 5.0, 1),
        (1, 11, 5.0, 2),
        (1, 12, 5.0, 3),
        (2, 11, 5.0, 1),
        (2, 12, 5.0, 2),
        (2, 10, 5.0, 3),
    ]
    split = split_by_time(ratings(rows))
    inter, users, items = index_splits(split)
    # item 12 is only ever valid/test... user 1: 10 train, 11 valid, 12 test; user 2: 11 train,
    # 12 valid, 10 test. Train items = {10, 11}; both rows with movie 12 stay, as misses (-1).
    assert list(items["movie_id"]) == [10, 11]
    unknown = inter[inter["movie_id"] == 12]
    assert len(unknown) == 2 and (unknown["item_idx"] == -1).all()
    assert set(unknown["split"]) == {"valid", "test"}
    assert (inter.loc[inter["split"] == "train", "item_idx"] >= 0).all()
    assert list(users["user_idx"]) == [0, 1]


def test_unknown_heldout_items_count_as_misses_and_are_reported():
    from recsys.evaluation.metrics import ranks_of_targets

    ranks = ranks_of_targets(
        np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]]),
        np.array([-1, 0]),
        [np.array([], dtype=int), np.array([], dtype=int)],
    )
    assert ranks.tolist() == [3, 0]  # rank N: a miss at every k
    ratings = pd.DataFrame(
        {
            "user_id": [1] * 5 + [2] * 5,
            "movie_id": [10, 11, 12, 13, 14, 10, 11, 12, 13, 15],
            "rating": 5.0,
            "timestamp": list(range(5)) * 2,
        }
    )
    movies = pd.DataFrame({"movie_id": range(10, 16), "title": "t", "genres": "g"})
    prepared = prepare(ratings, movies, DataConfig(min_user_interactions=1, min_item_interactions=1))
    # train = {10, 11, 12}; 13 is both users' validation item, 14 and 15 their test items
    assert prepared.meta["n_valid_unknown_items"] == 2
    assert prepared.meta["n_test_unknown_items"] == 2
    assert (prepared.interactions["item_idx"] == -1).sum() == 4
    seen = seen_lists(prepared.interactions, prepared.n_users)
    assert all((s >= 0).all() for s in seen)


def test_ml_latest_small_figures_are_pinned():
    prepared = prepare(load_ratings(SAMPLE / "ratings.csv"), load_movies(SAMPLE / "movies.csv"), DataConfig())
    assert (prepared.n_users, prepared.n_items) == (603, 1956)
    counts = prepared.interactions["split"].value_counts().to_dict()
    assert counts == {"train": 40033, "valid": 603, "test": 603}
    assert prepared.catalogue["title"].notna().all()
    assert (prepared.catalogue["train_count"] >= 1).all()
    assert prepared.meta["n_valid_unknown_items"] == prepared.meta["n_test_unknown_items"] == 0
    # the activity the nightly scoring reads holds every rating of every user, unfiltered
    assert len(prepared.activity) == 100_836 and prepared.activity["user_id"].nunique() == 610
    assert prepared.activity["user_id"].is_monotonic_increasing


def test_prepared_round_trip(tmp_path):
    prepared = prepare(load_ratings(SAMPLE / "ratings.csv"), load_movies(SAMPLE / "movies.csv"), DataConfig())
    save_prepared(prepared, tmp_path / "p")
    again = load_prepared(tmp_path / "p")
    pd.testing.assert_frame_equal(again.interactions, prepared.interactions)
    assert again.meta["n_train"] == 40033


def test_seen_lists_groups_by_user():
    pairs = pd.DataFrame({"user_idx": [1, 0, 1, 1], "item_idx": [5, 2, 3, 5]})
    seen = seen_lists(pairs, 3)
    assert [s.tolist() for s in seen] == [[2], [3, 5], []]


@pytest.mark.parametrize(
    "content, message",
    [
        ("a,b\n1,2\n", "lacks column"),
        ("", "cannot parse"),
    ],
)
def test_bad_ratings_files_raise_data_error(tmp_path, content, message):
    path = tmp_path / "ratings.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_ratings(path)


def test_missing_files_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_ratings(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="incomplete"):
        load_prepared(tmp_path)
