"""Feast entities: the keys the online store is addressed by (MovieLens ids, never model indices)."""

from feast import Entity, ValueType

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="A MovieLens user (userId in ratings.csv).",
    owner="recsys@example.com",
    tags={"team": "recsys", "source": "movielens"},
)

movie = Entity(
    name="movie",
    join_keys=["movie_id"],
    value_type=ValueType.INT64,
    description="A MovieLens movie (movieId in movies.csv).",
    owner="recsys@example.com",
    tags={"team": "recsys", "source": "movielens"},
)
