"""Feature services: the versioned contract downstream callers fetch by name.

recommendations_v1 takes only ``movie_ids`` from user_history: both views carry ``data_version``,
and Feast refuses colliding short names unless callers ask for full ("view__feature") names.
similar_movies_v1 is keyed by movie: it cannot join recommendations_v1, which is keyed by user.
"""

from feast import FeatureService
from feature_views import movie_features, movie_similar, user_history, user_recommendations

recommendations_v1 = FeatureService(
    name="recommendations_v1",
    features=[user_recommendations, user_history[["movie_ids"]]],
    description=(
        "Top-K movie ids, scores, the history movie behind each, model and data versions, and recent "
        "history per user (lookup and HTTP serving)."
    ),
    owner="recsys@example.com",
    tags={"team": "recsys"},
)

similar_movies_v1 = FeatureService(
    name="similar_movies_v1",
    features=[movie_similar, movie_features],
    description="Per movie: its most similar movies with scores, the model and data versions, and its title.",
    owner="recsys@example.com",
    tags={"team": "recsys"},
)
