"""The whole chain on one machine, without Airflow (``recsys run``, ``make chain``): the tasks of
the three DAGs called in their order, the similar movies after the recommender."""

from __future__ import annotations

import json
import logging

from recsys.config import Settings
from recsys.pipelines import ingest, retrain, score_nightly

log = logging.getLogger(__name__)


def run_all(settings: Settings, force_promotion: bool = False) -> dict:
    """ingest -> prepare -> train -> compare -> promote -> score -> validate -> publish, then the
    similar movies (:func:`run_similar`). Returns each step's result."""
    steps: dict[str, dict] = {}
    steps["ingest"] = ingest.ingest(settings, validate=True)
    steps["prepare"] = ingest.prepare(settings, steps["ingest"]["raw_dir"], steps["ingest"]["data_version"])
    prepared_dir, data_version = steps["prepare"]["prepared_dir"], steps["prepare"]["data_version"]
    steps["train"] = retrain.train(settings, prepared_dir, data_version)
    steps["compare"] = retrain.compare(settings, steps["train"]["version"], prepared_dir)
    steps["promote"] = retrain.promote(settings, steps["compare"], force=force_promotion)
    steps["score"] = score_nightly.score(settings, "champion")
    recommendations = steps["score"]["recommendations"]
    steps["validate_recommendations"] = score_nightly.validate_recommendations(settings, recommendations)
    steps["publish"] = score_nightly.publish(settings, recommendations)
    steps["similar"] = run_similar(settings, prepared_dir, data_version, force_promotion)
    log.info("chain done: %s", json.dumps(steps, default=str)[:2000])
    return steps


def run_similar(settings: Settings, prepared_dir: str, data_version: str = "", force: bool = False) -> dict:
    """Mine -> train -> gate -> score -> publish the similar movies, on one machine."""
    steps: dict[str, dict] = {}
    steps["pairs"] = retrain.mine_pairs(settings, prepared_dir, data_version)
    pairs_dir = steps["pairs"]["pairs_dir"]
    steps["train"] = retrain.train_similar(settings, pairs_dir, prepared_dir, steps["pairs"]["pairs_version"])
    steps["promote"] = retrain.promote_similar(settings, steps["train"], pairs_dir, force)
    steps["score"] = score_nightly.score_similar(settings, "champion")
    steps["publish"] = score_nightly.publish_similar(settings, steps["score"]["similar"])
    return steps
