"""Feature services: the versioned contract downstream callers fetch by name."""

from feast import FeatureService

from feature_views import user_recommendations

recommendations_v1 = FeatureService(
    name="recommendations_v1",
    features=[user_recommendations],
    description="Top-K movie ids, scores and model version per user (lookup and HTTP serving).",
    owner="recsys@example.com",
    tags={"team": "recsys"},
)
