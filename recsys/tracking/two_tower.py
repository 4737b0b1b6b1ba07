"""One training as one MLflow run: params, per-epoch metrics, plots, artefacts, a registered version."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import mlflow
import mlflow.data
import numpy as np
import pandas as pd
import torch
import yaml

from recsys.config import PROJECT_ROOT, Settings
from recsys.data.prepared import Prepared
from recsys.errors import DataError, ModelNotFoundError
from recsys.evaluation.metrics import bootstrap_interval, ndcg_at_k
from recsys.models.two_tower.evaluation import evaluate_model
from recsys.models.two_tower.export import export_scoring, retrieval_graph
from recsys.models.two_tower.model import TwoTower, checkpoint
from recsys.models.two_tower.training import TrainResult, train
from recsys.ops.registry import CHAMPION, TRAIN_VALID_TAG, Registry
from recsys.runtime import two_tower as bundle_mod
from recsys.runtime.content import write_rare
from recsys.runtime.two_tower import pad_lists
from recsys.tracking import gate
from recsys.tracking.plots import plot_curves

log = logging.getLogger(__name__)
PYFUNC_ENTRY = PROJECT_ROOT / "recsys" / "serving" / "pyfunc_two_tower.py"  # "models from code" entry point


def mostpop_metrics(prepared: Prepared) -> dict[str, float]:
    """MostPop's metrics as flat run metrics: ``mostpop_<split>_<metric>``."""
    return {
        f"mostpop_{split}_{k}": v
        for split, metrics in gate.mostpop_metrics(prepared).items()
        for k, v in metrics.items()
    }


def write_bundle(model: TwoTower, prepared: Prepared, settings: Settings, folder: Path) -> Path:
    """The model version's bundle (recsys.runtime.two_tower): ONNX graphs, item vectors, catalogue, users,
    bundle.json."""
    folder.mkdir(parents=True, exist_ok=True)
    tower, items = export_scoring(model, folder)
    retrieval_graph(tower, items, settings.score.k, folder / "model.onnx")
    prepared.catalogue.to_parquet(folder / "catalogue.parquet", index=False)
    prepared.users.to_parquet(folder / "users.parquet", index=False)
    write_rare(folder, prepared.tail["movie_id"] if prepared.tail is not None else None)
    meta = {
        "format": bundle_mod.FORMAT,
        "user_tower": model.cfg.user_tower,
        "k": min(settings.score.k, model.n_items),
        "history_length": model.cfg.history_length,
        "rating_threshold": settings.data.rating_threshold,
        "n_items": model.n_items,
        "n_users": model.n_users,
        "embedding_dim": model.cfg.embedding_dim,
    }
    (folder / bundle_mod.BUNDLE_FILE).write_text(json.dumps(meta, indent=2))
    return folder


def _write_training_files(result: TrainResult, settings: Settings, folder: Path) -> None:
    """Weights with their config, item embeddings and the resolved settings (run artefacts)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = result.model
    torch.save(
        checkpoint(model, {"settings": settings.public(), "best_epoch": result.best_epoch}),
        folder / "checkpoint.pt",
    )
    np.save(folder / "item_embeddings.npy", model.item_vectors().detach().numpy())
    (folder / "config.yaml").write_text(yaml.safe_dump(settings.public(), sort_keys=False))


def _log_epoch(row: dict) -> None:
    """One epoch's metrics (the row training reports) into the active MLflow run."""
    mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])


def log_dataset(prepared: Prepared, settings: Settings, data_version: str, folder: str) -> None:
    """Record the training data as an MLflow dataset input, its DVC version as the digest."""
    train_df = prepared.split("train")[["user_id", "movie_id", "rating", "timestamp"]]
    dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]  # set up lazily by mlflow.data
        train_df,
        source=folder or None,
        name=f"{settings.data.dataset}-train",
        digest=(data_version or "unversioned")[:36],
    )
    mlflow.log_input(dataset, context="training", tags={"data_version": data_version, "split": "train"})


def champion_hard_lists(settings: Settings, models: Registry, prepared: Prepared) -> np.ndarray | None:
    """Per user_idx: item_idx of the champion's list at positions [skip, pool) (pad n_items).

    The champion scores each train user from the train history with its own graph, so its lists
    are today's; None when there is no champion yet.
    """
    from recsys.runtime.scoring import score_users, user_inputs
    from recsys.runtime.two_tower import ModelBundle

    if settings.train.hard_negative_ratio <= 0 or models.champion_version() is None:
        return None
    try:
        version, folder = models.download_bundle(CHAMPION)
        champion = ModelBundle.load(folder)
    except (ModelNotFoundError, DataError) as exc:
        log.warning("no hard negatives: the champion cannot be read (%s)", exc)
        return None
    train_df = prepared.split("train")
    recs = score_users(champion, user_inputs(train_df, champion), version, "train")
    lo, hi = settings.train.hard_negative_skip, settings.train.hard_negative_pool
    catalogue = pd.Index(prepared.catalogue["movie_id"].to_numpy())
    rows = {
        uid: catalogue.get_indexer(np.asarray(items[lo:hi], dtype=np.int64))
        for uid, items in zip(recs["user_id"], recs["item_ids"])
    }
    lists = [rows.get(uid, np.empty(0, np.int64)) for uid in prepared.users["user_id"]]
    lists = [np.where(r >= 0, r, prepared.n_items) for r in lists]
    log.info("hard negatives from champion v%s: positions %d..%d of its lists", version, lo, hi)
    return pad_lists(lists, prepared.n_items, min_width=1)


def _evaluate(result: TrainResult, prepared: Prepared, settings: Settings) -> dict[str, float]:
    """The run's metrics: best validation, test with a bootstrap interval, MostPop beside them."""
    test, test_ranks = evaluate_model(result.model, prepared, "test", settings.train.eval_batch_size)
    low, high = bootstrap_interval(test_ranks, ndcg_at_k, 10, seed=settings.train.seed)
    return {
        **{f"best_valid_{k}": v for k, v in result.valid_metrics.items()},
        **{f"test_{k}": v for k, v in test.items()},
        "test_ndcg_at_10_ci_low": low,
        "test_ndcg_at_10_ci_high": high,
        "best_epoch": float(result.best_epoch),
        **mostpop_metrics(prepared),
    }


def run_training(
    settings: Settings, models: Registry, prepared: Prepared, data_version: str = "", prepared_dir: str = ""
) -> dict:
    """Train and evaluate in an MLflow run of ``models``' experiment, register a version of it;
    returns ids and metrics."""
    log.info("resolved settings: %s", json.dumps(settings.public(), default=str))
    hard_lists = champion_hard_lists(settings, models, prepared)
    tags = {"data_version": data_version, "user_tower": settings.model.user_tower}
    timings: dict[str, float] = {}
    with models.run() as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params(settings.flat())
        mlflow.set_tags(
            {
                **tags,
                "dataset": settings.data.dataset,
                "raw_data_version": str(prepared.meta.get("raw_data_version", "")),
                "hard_negatives_from": "champion" if hard_lists is not None else "none",
            }
        )
        log_dataset(prepared, settings, data_version, prepared_dir)
        tick = time.perf_counter()
        result = train(prepared, settings, on_epoch=_log_epoch, hard_lists=hard_lists)
        timings["train_s"], tick = time.perf_counter() - tick, time.perf_counter()
        metrics = _evaluate(result, prepared, settings)
        mlflow.log_metrics(metrics)
        timings["evaluate_s"], folder = time.perf_counter() - tick, Path(tmp)
        for png in plot_curves(result.epochs, folder / "plots", result.best_epoch):
            mlflow.log_artifact(str(png), "plots")
        _write_training_files(result, settings, folder / "training")
        mlflow.log_artifacts(str(folder / "training"), "training")
        tick = time.perf_counter()
        bundle = write_bundle(result.model, prepared, settings, folder / "bundle")
        timings["export_s"], tick = time.perf_counter() - tick, time.perf_counter()
        k = str(json.loads((bundle / bundle_mod.BUNDLE_FILE).read_text())["k"])  # the K the bundle holds
        valid = {TRAIN_VALID_TAG: result.valid_metrics["ndcg_at_10"]}
        version = models.log_model(bundle, PYFUNC_ENTRY, valid, {**tags, "run_id": run.info.run_id, "k": k})
        timings["register_s"] = time.perf_counter() - tick
    return {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "version": version,
        "best_epoch": result.best_epoch,
        "valid": result.valid_metrics,
        "test": {
            k.removeprefix("test_"): v
            for k, v in metrics.items()
            if k.startswith("test_") and "_ci_" not in k
        },
        "mostpop": {k: v for k, v in metrics.items() if k.startswith("mostpop_")},
        "epochs": result.epochs,
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
