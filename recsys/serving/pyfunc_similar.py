"""Entry point MLflow logs as the movie_similar serving model's code ("models from code")."""

import mlflow.models

from recsys.serving.models import SimilarModel

mlflow.models.set_model(SimilarModel())
