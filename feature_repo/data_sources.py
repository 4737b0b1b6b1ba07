"""Offline sources: the parquet record of each publish (the online store is written directly)."""

from feast import FileSource

user_recommendations_source = FileSource(
    name="user_recommendations_source",
    path="data/user_recommendations.parquet",
    timestamp_field="event_timestamp",
    description="Nightly top-K lists as published (one row per user and scoring run).",
    owner="recsys@example.com",
    tags={"team": "recsys"},
)

movie_source = FileSource(
    name="movie_source",
    path="data/movie.parquet",
    timestamp_field="event_timestamp",
    description="Item catalogue titles as published.",
    owner="recsys@example.com",
    tags={"team": "recsys"},
)

user_history_source = FileSource(
    name="user_history_source",
    path="data/user_history.parquet",
    timestamp_field="event_timestamp",
    description="Each user's recent positive movies as published (one row per user and run).",
    owner="recsys@example.com",
    tags={"team": "recsys"},
)

movie_similar_source = FileSource(
    name="movie_similar_source",
    path="data/movie_similar.parquet",
    timestamp_field="event_timestamp",
    description="Each movie's most similar movies as published (one row per movie and run).",
    owner="recsys@example.com",
    tags={"team": "recsys"},
)
