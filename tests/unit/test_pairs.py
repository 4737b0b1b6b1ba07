"""The pairwise table of "similar movies" (recsys.data.pairs) on a catalogue with planted structure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.config import PairsConfig
from recsys.data import pairs

pytestmark = pytest.mark.unit


def planted() -> tuple[pd.DataFrame, pd.DataFrame]:
    """60 movies in three tastes of 20; 300 users, each liking 8 movies of one taste.

    Taste 0: Comedy of the 1990s; taste 1: Comedy of the 1990s too (same characteristics, other
    fans: the hard negatives of taste 0); taste 2: Drama|War of the 1950s (the opposite).
    """
    rng = np.random.default_rng(0)
    genres = ["Comedy"] * 40 + ["Drama|War"] * 20
    years = [1994] * 40 + [1955] * 20
    rows = []
    for user in range(300):
        taste = user % 3
        for item in rng.choice(20, size=8, replace=False) + 20 * taste:
            rows.append((user, int(item)))
    train = pd.DataFrame(rows, columns=["user_idx", "item_idx"])
    counts = train.groupby("item_idx").size()
    catalogue = pd.DataFrame(
        {
            "item_idx": range(60),
            "movie_id": np.arange(60) + 1000,
            "title": [f"Movie {i} ({y})" for i, y in enumerate(years)],
            "genres": genres,
            # tastes 0 and 1 popular, taste 2 rare: another popularity band
            "train_count": [int(counts.get(i, 0)) + (100 if i < 40 else 0) for i in range(60)],
        }
    )
    return train, catalogue


CFG = PairsConfig(min_query_count=10, min_support=3, min_positives=3, popularity_bands=2, soft_clusters=4)


def test_positives_are_co_liked_hard_negatives_look_alike_soft_negatives_are_opposite():
    train, catalogue = planted()
    table = pairs.mine(train, catalogue, CFG)
    assert list(table.columns) == pairs.COLUMNS
    taste = {1000 + i: i // 20 for i in range(60)}
    first, second = table["movie_id_first"].map(taste), table["movie_id_second"].map(taste)
    kind = table["kind"]
    assert set(kind) == set(pairs.KINDS)
    assert (first[kind == "positive"] == second[kind == "positive"]).all()  # the same fans
    assert (table.loc[kind == "positive", "label"] == 1).all()
    assert (table.loc[kind != "positive", "label"] == 0).all()
    # hard: the other Comedy-1990s taste for taste 0/1 queries, never co-liked
    hard = table[kind == "hard_negative"]
    assert set(zip(hard["movie_id_first"].map(taste), hard["movie_id_second"].map(taste))) <= {(0, 1), (1, 0)}
    # soft: the opposite taste, reduced to at most soft_clusters medoids per query
    soft = table[kind == "soft_negative"]
    soft_tastes = soft["movie_id_first"].map(taste), soft["movie_id_second"].map(taste)
    assert ((soft_tastes[0] == 2) != (soft_tastes[1] == 2)).all()  # Comedy-1990s vs Drama-1950s
    assert soft.groupby("movie_id_first").size().max() <= CFG.soft_clusters
    # per query at most max_positives, no movie paired with itself, no pair twice
    assert table.groupby("movie_id_first")["kind"].apply(lambda k: (k == "positive").sum()).max() <= 20
    assert not (table["movie_id_first"] == table["movie_id_second"]).any()
    assert not table.duplicated(["movie_id_first", "movie_id_second"]).any()
    assert table.equals(pairs.mine(train, catalogue, CFG))  # seeded: the same table again


def test_positive_pairs_without_a_shared_genre_are_marked():
    train, catalogue = planted()
    catalogue.loc[5, "genres"] = "Horror"  # liked by taste 0's fans, shares no genre with them
    table = pairs.mine(train, catalogue, CFG)
    pos = table[table["kind"] == "positive"]
    involved = (pos["movie_id_first"] == 1005) | (pos["movie_id_second"] == 1005)
    assert involved.any()
    assert not pos.loc[involved, "shares_characteristics"].any()
    assert pos.loc[~involved, "shares_characteristics"].all()


def test_the_split_is_by_query_movie_about_80_10_10():
    queries = pd.Series(np.repeat(np.arange(1000), 3))
    split = pairs.split_of(queries, seed=0)
    per_query = pd.DataFrame({"q": queries, "s": split}).groupby("q")["s"].nunique()
    assert (per_query == 1).all()
    shares = pd.Series(split[::3]).value_counts(normalize=True)
    assert shares.to_dict() == {"train": 0.8, "valid": 0.1, "test": 0.1}


def test_kmeans_medoids_collapses_duplicates_and_keeps_one_member_per_cluster():
    rng = np.random.default_rng(0)
    points = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)  # 3 distinct points, 4 copies each
    assert list(pairs.kmeans_medoids(points, 5, rng)) == [0, 4, 8]
    blobs = np.vstack([rng.normal(c, 0.05, size=(30, 2)) for c in ((0, 0), (5, 5), (0, 5))]).astype(
        np.float32
    )
    medoids = pairs.kmeans_medoids(blobs, 3, rng)
    assert sorted(m // 30 for m in medoids) == [0, 1, 2]  # one medoid per blob


def test_overlaps_counts_movies_shared_across_splits_and_positives_that_are_negatives():
    table = pd.DataFrame(
        [
            (1, 2, 1, "positive", "train", True),
            (1, 3, 0, "hard_negative", "train", True),
            (2, 3, 1, "positive", "test", True),
            (2, 1, 0, "soft_negative", "test", False),
        ],
        columns=pairs.COLUMNS,
    )
    got = pairs.overlaps(table)
    assert got["queries"] == 2
    assert got["query_movies_seen_in_another_split"] == 2  # 1 (train) seen in test, 2 (test) in train
    assert got["positive_movies"] == 2 and got["positive_also_negative"] == 1  # movie 3
    assert got["positive_also_negative_across_splits"] == 1  # positive in test, negative in train
