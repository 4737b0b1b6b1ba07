"""Entry point MLflow logs as the serving model's code ("models from code": no pickling)."""

import mlflow.models

from recsys.serving.models import RecommenderModel

mlflow.models.set_model(RecommenderModel())
