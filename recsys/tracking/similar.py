"""One training of the similar-movies item tower as one MLflow run, registered as ``movie_similar``.

The run (experiment ``mlflow.similar_experiment``) holds the settings as params, per-epoch metrics
(the triplet loss, the share of active triplets, validation Recall@10/50 and AUCs), the loss curve,
the pairwise table's counts and overlaps, and test metrics of the epoch kept. Its bundle
(recsys.runtime.similar.SimilarBundle) is registered with alias ``challenger``; :func:`similar_gate` moves
``champion``. Each function takes the :class:`~recsys.ops.registry.Registry` of the model it reads.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from recsys.config import PROJECT_ROOT, Settings, SimilarConfig
from recsys.data.features import item_features
from recsys.errors import DataError, ModelNotFoundError
from recsys.evaluation.similarity import align_vectors, similarity_metrics, vector_scores
from recsys.ops.registry import CHAMPION, Registry
from recsys.runtime.similar import SimilarBundle
from recsys.tracking.gate import decide, record

log = logging.getLogger(__name__)
SIMILAR_ENTRY = PROJECT_ROOT / "recsys" / "serving" / "pyfunc_similar.py"
GATE_METRIC = "recall_at_10"
VALID_TAG = "valid_recall_at_10"


@dataclass(frozen=True)
class TwoTowerVectors:
    """The two_tower champion's item vectors, rows matched to a catalogue (NaN: a movie it lacks)."""

    version: str
    vectors: np.ndarray
    coverage: float  # share of the catalogue's movies with a vector


def two_tower_vectors(two_tower: Registry, catalogue: pd.DataFrame) -> TwoTowerVectors | None:
    """The ``two_tower`` champion's item vectors for ``catalogue`` (``two_tower``: that model's
    registry); None, with a warning, while there is no champion or it has no item vectors."""
    try:
        version, folder = two_tower.download_bundle(CHAMPION)
        their = pd.read_parquet(folder / "catalogue.parquet", columns=["item_idx", "movie_id"])
        vectors = np.load(folder / "item_vectors.npy")
        rows = their["item_idx"].to_numpy()
        aligned = align_vectors(vectors[rows], their["movie_id"].to_numpy(), catalogue["movie_id"].to_numpy())
    except (ModelNotFoundError, DataError, OSError, ValueError, IndexError) as exc:
        log.warning("no two_tower item vectors to start the item tower from (%s)", exc)
        return None
    known = ~np.isnan(aligned).any(1)
    if not known.any():
        log.warning("the two_tower champion v%s shares no movie with this catalogue", version)
        return None
    return TwoTowerVectors(str(version), aligned, float(known.mean()))


def two_tower_metrics(
    reference: TwoTowerVectors, table: pd.DataFrame, catalogue: pd.DataFrame, split: str
) -> dict[str, float]:
    """The two_tower champion's item vectors as they are, scored by cosine (a movie without a vector
    scores 0 with every other): the floor a fine-tuned version must beat."""
    vectors = np.nan_to_num(reference.vectors, nan=0.0)
    return similarity_metrics(
        vector_scores(vectors, "cosine"), table[table["split"] == split], catalogue["movie_id"].to_numpy()
    )


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


def _log_inputs(
    settings: Settings, table: pd.DataFrame, pairs_version: str, start: TwoTowerVectors | None
) -> None:
    """Params, tags, the table as the run's input and its counts, in the active run."""
    mlflow.log_params({k: v for k, v in settings.flat().items() if k.split(".")[0] in ("similar", "pairs")})
    init_from = f"two_tower v{start.version}" if start else "random"
    mlflow.set_tags(
        {"pairs_version": pairs_version, "dataset": settings.data.dataset, "init_from": init_from}
    )
    if settings.similar.init == "two_tower" and start is None:
        log.warning("similar.init is two_tower but there is no two_tower champion: starting at random")
    digest = (pairs_version or "unversioned")[:36]
    dataset = mlflow.data.from_pandas(table, name=f"{settings.data.dataset}-pairs", digest=digest)  # type: ignore[attr-defined]
    mlflow.log_input(dataset, context="training")
    counts = table.groupby(["kind", "split"]).size()
    mlflow.log_metrics({f"pairs_{kind}_{split}": float(n) for (kind, split), n in counts.items()})


def _evaluation(
    result: Any, table: pd.DataFrame, catalogue: pd.DataFrame, reference: TwoTowerVectors | None
) -> dict[str, dict[str, float]]:
    """Test metrics of the epoch kept (its trained vectors, and its features-only path), the genre
    floor's and (given ``reference``) the two_tower vectors' on valid and test."""
    from recsys.models.item_tower.training import evaluate_tower

    two_tower = {
        f"two_tower_{split}_{k}": v
        for split in ("valid", "test")
        for k, v in (two_tower_metrics(reference, table, catalogue, split).items() if reference else ())
    }
    return {
        "test": evaluate_tower(result.model, table, "test", catalogue["movie_id"].to_numpy()),
        # the same queries embedded from their features alone, as a movie without enough positives
        "test_cold": evaluate_tower(result.model, table, "test", catalogue["movie_id"].to_numpy(), cold=True),
        "genre_valid": genre_metrics(table, catalogue, "valid"),
        "two_tower": two_tower,
    }


def _log_artefacts(result: Any, cfg: SimilarConfig, folder: Path) -> None:
    """The loss curve, the per-epoch rows and the tower's weights with its config."""
    import torch

    plot = _plot_loss(result.epochs, result.best_epoch, folder / "plots" / "triplet_loss.png")
    mlflow.log_artifact(str(plot), "plots")
    (folder / "epochs.json").write_text(json.dumps(result.epochs, indent=2))
    mlflow.log_artifact(str(folder / "epochs.json"))
    torch.save(
        {"state_dict": result.model.state_dict(), "config": cfg.model_dump()}, folder / "item_tower.pt"
    )
    mlflow.log_artifact(str(folder / "item_tower.pt"), "training")


def _log_epoch(row: dict) -> None:
    mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])


def run_similar_training(
    settings: Settings,
    models: Registry,
    table: pd.DataFrame,
    catalogue: pd.DataFrame,
    pairs_version: str,
    reference: TwoTowerVectors | None = None,
    rare: pd.Series | None = None,
) -> dict:
    """Train, evaluate (valid and test, the genre floor and the two_tower vectors beside it), log,
    register in ``models``; ids and metrics. ``reference``: the two_tower champion's vectors, which
    start the id embeddings when ``similar.init`` is ``two_tower``; ``rare``: the movies rated in
    the training data but left out of the catalogue (recsys.runtime.similar: no candidates)."""
    from recsys.models.item_tower.export import write_bundle
    from recsys.models.item_tower.training import train_tower

    cfg = settings.similar
    start = reference if cfg.init == "two_tower" else None
    with models.run() as run, tempfile.TemporaryDirectory() as tmp:
        _log_inputs(settings, table, pairs_version, start)
        tick = time.perf_counter()
        result = train_tower(
            table,
            catalogue,
            cfg,
            on_epoch=_log_epoch,
            init_vectors=start.vectors if start else None,
        )
        train_s = time.perf_counter() - tick
        found = _evaluation(result, table, catalogue, reference)
        metrics = {
            **{f"best_valid_{k}": v for k, v in result.valid.items()},
            **{f"test_{k}": v for k, v in found["test"].items()},
            **{f"test_cold_{k}": v for k, v in found["test_cold"].items()},
            **{f"genre_valid_{k}": v for k, v in found["genre_valid"].items()},
            **found["two_tower"],
            **({"init_coverage": start.coverage} if start else {}),
            "best_epoch": float(result.best_epoch),
            "train_seconds": train_s,
        }
        mlflow.log_metrics(metrics)
        _log_artefacts(result, cfg, Path(tmp))
        ids = {"pairs_version": pairs_version, "run_id": run.info.run_id}
        bundle = write_bundle(result.model, catalogue, cfg.k, Path(tmp) / "bundle", ids, rare)
        k = str(min(cfg.k, len(catalogue) - 1))  # what the lists hold: K, or every other movie
        version = models.log_model(
            bundle, SIMILAR_ENTRY, {VALID_TAG: result.valid[GATE_METRIC]}, {**ids, "k": k}
        )
    return {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "version": version,
        "best_epoch": result.best_epoch,
        "valid": result.valid,
        **found,
        "init_from": f"two_tower v{start.version}" if start else "random",
        "epochs": len(result.epochs),
        "train_seconds": round(train_s, 3),
    }


def bundle_metrics(bundle: SimilarBundle, table: pd.DataFrame, split: str = "valid") -> dict[str, float]:
    """A version's metrics on one split of a table, from its own item vectors."""
    vectors = np.load(bundle.folder / "item_vectors.npy")
    return similarity_metrics(
        vector_scores(vectors, bundle.distance), table[table["split"] == split], bundle.movie_ids
    )


def similar_gate(
    models: Registry,
    version: str,
    table: pd.DataFrame,
    force: bool = False,
    reference: TwoTowerVectors | None = None,
) -> dict:
    """Promote ``version`` if it beats the champion and the floors on today's validation queries
    (see recsys.pipelines.retrain.promote_similar): the genre cosine and, given ``reference``, the two_tower
    champion's item vectors as they are. The decision is logged to its run and tags."""
    candidate = SimilarBundle.load(models.download_bundle(version)[1])
    mine = bundle_metrics(candidate, table)
    floors = {"the genre floor": genre_metrics(table, candidate.catalogue, "valid")}
    if reference is not None:
        floors[f"two_tower v{reference.version}'s item vectors"] = two_tower_metrics(
            reference, table, candidate.catalogue, "valid"
        )
    previous = models.champion_version()
    theirs = None
    if previous is not None and previous != str(version):
        try:
            theirs = bundle_metrics(SimilarBundle.load(models.download_bundle(previous)[1]), table)
        except (ModelNotFoundError, DataError) as exc:
            log.warning("similar champion v%s cannot be evaluated (%s); gating on the floors", previous, exc)
    decision = decide(
        mine[GATE_METRIC],
        {name: floor[GATE_METRIC] for name, floor in floors.items()},
        theirs[GATE_METRIC] if theirs else None,
        previous,
        force,
        metric="valid Recall@10",
    )
    logged = {f"gate_valid_{k}": v for k, v in mine.items()}
    logged.update({f"gate_champion_valid_{k}": v for k, v in (theirs or {}).items()})
    if reference is not None:
        logged.update({f"gate_two_tower_valid_{k}": v for k, v in list(floors.values())[-1].items()})
    return {
        **record(models, str(version), decision, logged),
        "metrics": mine,
        "champion_metrics": theirs,
        "genre_metrics": floors["the genre floor"],
        "two_tower_metrics": list(floors.values())[-1] if reference is not None else None,
    }
