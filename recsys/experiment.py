"""One training as one MLflow run: params, per-epoch metrics, plots, artefacts, a registered version."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import torch
import yaml

from recsys import registry
from recsys.config import Settings
from recsys.data import Prepared, seen_lists
from recsys.evaluation import MostPop, bootstrap_interval, evaluate_ranks, metrics_from_ranks, ndcg_at_k
from recsys.export import export_onnx
from recsys.model import checkpoint
from recsys.reporting import plot_curves
from recsys.training import TrainResult, evaluate_model, serving_histories, train

log = logging.getLogger(__name__)


def mostpop_metrics(prepared: Prepared) -> dict[str, float]:
    """MostPop on validation (seen = train) and test (seen = train + valid), same code as the model."""
    baseline = MostPop(prepared.catalogue["train_count"].to_numpy())
    out = {}
    for split, before in (("valid", ("train",)), ("test", ("train", "valid"))):
        pairs = prepared.interactions[prepared.interactions["split"].isin(before)]
        ranks = evaluate_ranks(baseline, prepared.split(split), seen_lists(pairs, prepared.n_users))
        out.update({f"mostpop_{split}_{k}": v for k, v in metrics_from_ranks(ranks).items()})
    return out


def _write_artifacts(result: TrainResult, prepared: Prepared, settings: Settings,
                     folder: Path) -> dict[str, Path]:
    """Weights with config, item embeddings, id maps, catalogue, exclusions, ONNX graph."""
    model = result.model
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "checkpoint": folder / "checkpoint.pt",
        "item_embeddings": folder / "item_embeddings.npy",
        "users": folder / "users.parquet",
        "catalogue": folder / "catalogue.parquet",
        "rated": folder / "rated.parquet",
        "config": folder / "config.yaml",
        "onnx": folder / "model.onnx",
    }
    torch.save(checkpoint(model, {"settings": settings.model_dump(mode="json"),
                                  "best_epoch": result.best_epoch}), files["checkpoint"])
    np.save(files["item_embeddings"], model.item_vectors().detach().numpy())
    prepared.users.to_parquet(files["users"], index=False)
    prepared.catalogue.to_parquet(files["catalogue"], index=False)
    prepared.rated.to_parquet(files["rated"], index=False)
    files["config"].write_text(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))
    if model.cfg.user_tower == "history":
        files["histories"] = folder / "histories.npy"
        np.save(files["histories"], serving_histories(
            prepared, model.cfg.history_length, ("train", "valid", "test")).numpy())
    export_onnx(model, files["onnx"], settings.score.k)
    return files


def run_training(settings: Settings, prepared: Prepared, data_version: str = "") -> dict:
    """Train and evaluate in an MLflow run, register the model; returns ids and metrics."""
    registry.configure(settings)
    log.info("resolved settings: %s", json.dumps(settings.model_dump(mode="json"), default=str))
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params(settings.flat())
        mlflow.set_tags({"data_version": data_version, "dataset": settings.data.dataset,
                         "raw_data_version": str(prepared.meta.get("raw_data_version", "")),
                         "user_tower": settings.model.user_tower})
        result = train(prepared, settings, on_epoch=lambda row: mlflow.log_metrics(
            {k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"]))
        test, test_ranks = evaluate_model(result.model, prepared, "test",
                                          settings.train.eval_batch_size)
        low, high = bootstrap_interval(test_ranks, ndcg_at_k, 10, seed=settings.train.seed)
        metrics = {**{f"best_valid_{k}": v for k, v in result.valid_metrics.items()},
                   **{f"test_{k}": v for k, v in test.items()},
                   "test_ndcg_at_10_ci_low": low, "test_ndcg_at_10_ci_high": high,
                   "best_epoch": float(result.best_epoch), **mostpop_metrics(prepared)}
        mlflow.log_metrics(metrics)
        folder = Path(tmp)
        for png in plot_curves(result.epochs, folder / "plots", result.best_epoch):
            mlflow.log_artifact(str(png), "plots")
        files = _write_artifacts(result, prepared, settings, folder / "model")
        mlflow.log_artifacts(str(folder / "model"), "training")
        gate = {registry.GATE_METRIC: result.valid_metrics["ndcg_at_10"]}
        version = registry.log_model(settings, files, gate,
                                     {"data_version": data_version, "run_id": run.info.run_id})
    return {"run_id": run.info.run_id, "version": version, "best_epoch": result.best_epoch,
            "valid": result.valid_metrics, "test": test,
            "mostpop": {k: v for k, v in metrics.items() if k.startswith("mostpop_")}}
