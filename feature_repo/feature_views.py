"""Feature views served from Redis.

ttl=0 means "never outside max age": a list stays servable until the next nightly publish replaces
it, so a failed night serves yesterday's lists instead of nothing.
"""

from datetime import timedelta

from data_sources import movie_similar_source, movie_source, user_history_source, user_recommendations_source
from entities import movie, user
from feast import FeatureView, Field
from feast.types import Array, Float32, Int64, String

user_recommendations = FeatureView(
    name="user_recommendations",
    entities=[user],
    ttl=timedelta(0),
    schema=[
        Field(name="user_id", dtype=Int64),
        Field(name="item_ids", dtype=Array(Int64), description="Movie ids, best first."),
        Field(name="scores", dtype=Array(Float32), description="Model scores, same order."),
        Field(
            name="because_ids",
            dtype=Array(Int64),
            description="Same order: the movie of the user's history that explains each one (0: none, "
            "as in a popular list; empty when reasons are off).",
        ),
        Field(name="model_version", dtype=String, description="Registered two_tower version."),
        Field(
            name="arm",
            dtype=String,
            description="The arm whose version scored the list: champion, or canary (a slice of users).",
        ),
        Field(name="data_version", dtype=String, description="DVC version of the snapshot it was scored on."),
        Field(
            name="scored_at",
            dtype=String,
            description="When the list was scored (UTC, ISO 8601); unchanged users keep an older one.",
        ),
    ],
    online=True,
    source=user_recommendations_source,
    description="Each user's top-K movies from the nightly two-tower scoring run.",
    owner="recsys@example.com",
    tags={"team": "recsys", "model": "two_tower"},
)

user_history = FeatureView(
    name="user_history",
    entities=[user],
    ttl=timedelta(0),
    schema=[
        Field(name="user_id", dtype=Int64),
        Field(name="movie_ids", dtype=Array(Int64), description="Recent positive movie ids, newest last."),
        Field(name="data_version", dtype=String, description="DVC version of the prepared data."),
    ],
    online=True,
    source=user_history_source,
    description="Each user's most recent positively rated movies, for sequence models and serving.",
    owner="recsys@example.com",
    tags={"team": "recsys"},
)

movie_features = FeatureView(
    name="movie",
    entities=[movie],
    ttl=timedelta(0),
    schema=[
        Field(name="movie_id", dtype=Int64),
        Field(name="title", dtype=String, description="Title with year, as in movies.csv."),
    ],
    online=True,
    source=movie_source,
    description="Movie titles, so lookups render lists from the store alone.",
    owner="recsys@example.com",
    tags={"team": "recsys"},
)

movie_similar = FeatureView(
    name="movie_similar",
    entities=[movie],
    ttl=timedelta(0),
    schema=[
        Field(name="movie_id", dtype=Int64),
        Field(name="movie_ids", dtype=Array(Int64), description="The most similar other movies, best first."),
        Field(name="scores", dtype=Array(Float32), description="Similarity (higher is closer), same order."),
        Field(
            name="source",
            dtype=String,
            description="collaborative: the trained vector; content: embedded from its features alone.",
        ),
        Field(name="model_version", dtype=String, description="Registered movie_similar version."),
        Field(
            name="data_version", dtype=String, description="DVC version of the pairwise table it learnt from."
        ),
    ],
    online=True,
    source=movie_similar_source,
    description="Each movie's top-K similar movies from the triplet-trained item tower (nightly publish).",
    owner="recsys@example.com",
    tags={"team": "recsys", "model": "movie_similar"},
)
