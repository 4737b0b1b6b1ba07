"""One training of the similar-movies item tower as one MLflow run, registered as ``movie_similar``.

The run (experiment ``mlflow.similar_experiment``) holds the settings as params, per-epoch metrics
(the triplet loss, the share of active triplets, validation Recall@10/50 and AUCs), the loss curve,
the pairwise table's counts and overlaps, and test metrics of the epoch kept. Its bundle
(recsys.similar.SimilarBundle) is registered with alias ``challenger``; :func:`similar_gate` moves
``champion``. The settings passed in are :func:`recsys.pipelines.similar_settings`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from recsys import registry
from recsys.config import PROJECT_ROOT, Settings
from recsys.errors import DataError, ModelNotFoundError
from recsys.similar import SimilarBundle, item_features, similarity_metrics, vector_scores

log = logging.getLogger(__name__)
SIMILAR_ENTRY = PROJECT_ROOT / "recsys" / "pyfunc_similar.py"
GATE_METRIC = "recall_at_10"
VALID_TAG = "valid_recall_at_10"


def genre_metrics(table: pd.DataFrame, catalogue: pd.DataFrame, split: str) -> dict[str, float]:
    """The floor every version must beat: cosine of the genre multi-hot, no training."""
    genres = item_features(catalogue).genres
    return similarity_metrics(
        vector_scores(genres, "cosine"), table[table["split"] == split], catalogue["movie_id"].to_numpy()
    )


def _plot_loss(epochs: list[dict], best: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    x = [row["epoch"] for row in epochs]
    left.plot(x, [row["triplet_loss"] for row in epochs], marker="o")
    left.set(title="triplet loss (train)", xlabel="epoch")
    right.plot(x, [row["valid_recall_at_10"] for row in epochs], marker="o", label="Recall@10")
    right.plot(x, [row["valid_auc_hard"] for row in epochs], marker="o", label="AUC vs hard")
    right.set(title="validation", xlabel="epoch")
    right.legend()
    for ax in (left, right):
        ax.axvline(best, color="grey", linestyle="--")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def run_similar_training(
    settings: Settings, table: pd.DataFrame, catalogue: pd.DataFrame, pairs_version: str
) -> dict:
    """Train, evaluate (valid and test, the genre floor beside it), log, register; ids and metrics."""
    import torch

    from recsys.item_tower import evaluate_tower, train_tower, write_bundle

    registry.configure(settings)
    cfg = settings.similar
    movie_ids = catalogue["movie_id"].to_numpy()
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params(
            {k: v for k, v in settings.flat().items() if k.split(".")[0] in ("similar", "pairs")}
        )
        mlflow.set_tags({"pairs_version": pairs_version, "dataset": settings.data.dataset})
        mlflow.log_input(
            mlflow.data.from_pandas(  # type: ignore[attr-defined]
                table, name=f"{settings.data.dataset}-pairs", digest=(pairs_version or "unversioned")[:36]
            ),
            context="training",
        )
        counts = table.groupby(["kind", "split"]).size()
        mlflow.log_metrics({f"pairs_{kind}_{split}": float(n) for (kind, split), n in counts.items()})
        tick = time.perf_counter()

        def log_epoch(row: dict) -> None:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])

        result = train_tower(table, catalogue, cfg, on_epoch=log_epoch)
        train_s = time.perf_counter() - tick
        test = evaluate_tower(result.model, table, "test", movie_ids)
        floor = genre_metrics(table, catalogue, "valid")
        metrics = {
            **{f"best_valid_{k}": v for k, v in result.valid.items()},
            **{f"test_{k}": v for k, v in test.items()},
            **{f"genre_valid_{k}": v for k, v in floor.items()},
            "best_epoch": float(result.best_epoch),
            "train_seconds": train_s,
        }
        mlflow.log_metrics(metrics)
        folder = Path(tmp)
        mlflow.log_artifact(
            str(_plot_loss(result.epochs, result.best_epoch, folder / "plots" / "triplet_loss.png")), "plots"
        )
        (folder / "epochs.json").write_text(json.dumps(result.epochs, indent=2))
        mlflow.log_artifact(str(folder / "epochs.json"))
        torch.save(
            {"state_dict": result.model.state_dict(), "config": cfg.model_dump()}, folder / "item_tower.pt"
        )
        mlflow.log_artifact(str(folder / "item_tower.pt"), "training")
        bundle = write_bundle(
            result.model,
            catalogue,
            cfg.k,
            folder / "bundle",
            {"pairs_version": pairs_version, "run_id": run.info.run_id},
        )
        version = registry.log_model(
            settings,
            bundle,
            SIMILAR_ENTRY,
            {VALID_TAG: result.valid[GATE_METRIC]},
            {
                "pairs_version": pairs_version,
                "run_id": run.info.run_id,
                "k": str(min(cfg.k, len(catalogue) - 1)),
            },
        )
    return {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "version": version,
        "best_epoch": result.best_epoch,
        "valid": result.valid,
        "test": test,
        "genre_valid": floor,
        "epochs": len(result.epochs),
        "train_seconds": round(train_s, 3),
    }


def bundle_metrics(bundle: SimilarBundle, table: pd.DataFrame, split: str = "valid") -> dict[str, float]:
    """A version's metrics on one split of a table, from its own item vectors."""
    vectors = np.load(bundle.folder / "item_vectors.npy")
    return similarity_metrics(
        vector_scores(vectors, bundle.distance), table[table["split"] == split], bundle.movie_ids
    )


def similar_gate(settings: Settings, version: str, table: pd.DataFrame, force: bool = False) -> dict:
    """Promote ``version`` if it beats the champion and the genre floor on today's validation
    queries (see recsys.pipelines.promote_similar); the decision is logged to its run and tags."""
    registry.configure(settings)
    candidate = SimilarBundle.load(registry.download_bundle(settings, version)[1])
    mine = bundle_metrics(candidate, table)
    floor = genre_metrics(table, candidate.catalogue, "valid")
    previous = registry.champion_version(settings)
    theirs = None
    if previous is not None and previous != str(version):
        try:
            theirs = bundle_metrics(
                SimilarBundle.load(registry.download_bundle(settings, previous)[1]), table
            )
        except (ModelNotFoundError, DataError) as exc:
            log.warning(
                "similar champion v%s cannot be evaluated (%s); gating on the genre floor", previous, exc
            )
    ours = mine[GATE_METRIC]
    if force:
        promote, reason = True, "forced"
    elif ours <= floor[GATE_METRIC]:
        promote, reason = (
            False,
            f"valid Recall@10 {ours:.4f} does not beat the genre floor {floor[GATE_METRIC]:.4f}",
        )
    elif theirs is not None and ours <= theirs[GATE_METRIC]:
        promote, reason = (
            False,
            f"valid Recall@10 {ours:.4f} does not beat champion v{previous}'s {theirs[GATE_METRIC]:.4f}",
        )
    else:
        against = f"champion v{previous}'s {theirs[GATE_METRIC]:.4f}" if theirs else "no readable champion"
        promote, reason = (
            True,
            f"valid Recall@10 {ours:.4f} beats the genre floor {floor[GATE_METRIC]:.4f} and {against}",
        )
    if promote and previous != str(version):
        registry.promote(settings, str(version), reason)
    tags = {"gate_decision": "promoted" if promote else "kept_champion", "gate_reason": reason}
    with mlflow.start_run(run_id=registry.resolve(settings, str(version)).run_id):
        mlflow.set_tags(tags)
        mlflow.log_metrics({f"gate_valid_{k}": v for k, v in mine.items()})
        if theirs:
            mlflow.log_metrics({f"gate_champion_valid_{k}": v for k, v in theirs.items()})
    registry.tag_version(settings, str(version), tags)
    log.info("movie_similar gate for version %s: %s", version, reason)
    return {
        "version": str(version),
        "promoted": promote,
        "champion": str(version) if promote else previous,
        "previous": previous,
        "reason": reason,
        "metrics": mine,
        "champion_metrics": theirs,
        "genre_metrics": floor,
    }
