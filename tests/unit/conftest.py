"""Synthetic data with a known answer: a checkerboard of two taste groups."""

import numpy as np
import pandas as pd
import pytest

from recsys.config import DataConfig
from recsys.data.prepared import Prepared, prepare


def checkerboard(
    n_users: int = 40, n_items: int = 30, per_user: int = 12, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Even users like even movies, odd users odd movies (ratings 5), plus a few 1-star misses."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(1, n_users + 1):
        liked = [m for m in range(1, n_items + 1) if m % 2 == user % 2]
        for t, movie in enumerate(rng.choice(liked, size=per_user, replace=False)):
            rows.append((user, int(movie), 5.0, 1_000_000_000 + t))
        disliked = [m for m in range(1, n_items + 1) if m % 2 != user % 2]
        rows.append((user, int(rng.choice(disliked)), 1.0, 1_000_000_000 + per_user))
    ratings = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
    movies = pd.DataFrame(
        {
            "movie_id": range(1, n_items + 1),
            "title": [f"Movie {m}" for m in range(1, n_items + 1)],
            "genres": "Drama",
        }
    )
    return ratings, movies


@pytest.fixture(scope="session")
def tiny() -> Prepared:
    ratings, movies = checkerboard()
    return prepare(ratings, movies, DataConfig(min_user_interactions=3, min_item_interactions=3))
