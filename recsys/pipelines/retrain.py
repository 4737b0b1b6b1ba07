"""The tasks of DAG ``recsys_retrain``: train the two-tower and gate it; mine the pairwise table,
train the similar-movies item tower and gate it.

Each registered model has its own :class:`~recsys.ops.registry.Registry`, opened here from the
settings and passed down. ``train`` and ``promote`` take the ``model`` lock, the similar-movies
steps ``similar_model`` and ``mine_pairs`` the ``data`` lock (recsys.ops.locks), so both branches
run side by side on Celery. A failed training never touches a champion or the served lists.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from recsys import home
from recsys.config import Settings
from recsys.data.prepared import PreparedRef
from recsys.files import read_parquet, swap_in
from recsys.ops.locks import locked
from recsys.ops.registry import MOVIE_SIMILAR, TWO_TOWER, Registry

log = logging.getLogger(__name__)


@locked("model")
def train(settings: Settings, prepared_dir: str, data_version: str = "") -> dict:
    """Train, evaluate (valid + test, with MostPop beside it), log to MLflow, register a version."""
    from recsys.tracking.two_tower import run_training

    ref = PreparedRef(Path(prepared_dir), data_version) if data_version else PreparedRef.at(prepared_dir)
    return run_training(
        settings, Registry.open(settings, TWO_TOWER), ref.load(), ref.data_version, prepared_dir
    )


def compare(settings: Settings, version: str, prepared_dir: str | None = None) -> dict:
    """Evaluate ``version``, the champion and MostPop alike on the current validation split
    (recsys.tracking.gate); logged to the challenger's run. ``champion`` is None without one."""
    from recsys.tracking.gate import compare_two_tower

    ref = PreparedRef.at(prepared_dir or home.prepared_dir(settings))
    return compare_two_tower(Registry.open(settings, TWO_TOWER), str(version), ref)


@locked("model")
def promote(settings: Settings, comparison: dict, force: bool = False) -> dict:
    """The promotion gate on a :func:`compare` result: a challenger that beats MostPop and the
    champion on the same split (or ``force``) becomes the champion; with ``promotion.mode=canary``
    and a champion in place it becomes the canary instead (``canary`` in the result), unless forced.
    Raises ModelNotFoundError when the champion moved since the comparison (someone promoted by hand
    in between)."""
    from recsys.pipelines import canary
    from recsys.tracking.gate import promote_two_tower

    models = Registry.open(settings, TWO_TOWER)
    hold = settings.promotion.mode == "canary" and not force and models.champion_version() is not None
    result = promote_two_tower(models, comparison, force, as_canary=hold)
    if result.get("canary"):
        result["canary"] = canary.replace(settings, result["version"], by="promotion gate")["canary"]
    return result


def pair_counts(table) -> dict[str, dict[str, int]]:  # noqa: ANN001 - a pairs frame
    """Rows per kind and split, plus the positives that share no characteristic."""
    splits = ("train", "valid", "test")
    counts = table.groupby(["kind", "split"]).size()
    out: dict[str, dict[str, int]] = {
        kind: {split: int(counts.get((kind, split), 0)) for split in splits}
        for kind in ("positive", "hard_negative", "soft_negative")
    }
    queries = table.groupby("split")["movie_id_first"].nunique()
    out["queries"] = {split: int(queries.get(split, 0)) for split in splits}
    positives = table[table["kind"] == "positive"]
    out["positives_sharing_no_characteristic"] = {
        split: int((~positives[positives["split"] == split]["shares_characteristics"]).sum())
        for split in splits
    }
    return out


@locked("data")
def mine_pairs(settings: Settings, prepared_dir: str, data_version: str = "") -> dict:
    """Mine the pairwise table from the prepared train split (recsys.data.pairs), validate it (suite
    ``pairs``), swap it in and track it with DVC. A table that fails validation replaces nothing."""
    from recsys.data import pairs, snapshots
    from recsys.data.validation import validate_pairs

    ref = PreparedRef.at(prepared_dir)
    prepared = ref.load()
    table = pairs.mine(prepared.split("train"), prepared.catalogue, settings.pairs)
    validation = validate_pairs(
        table, settings.pairs.min_positives, settings.pairs.max_positives, home.data_docs(settings)
    )
    target = home.pairs_dir(settings)
    staging = target.with_name(target.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    table.to_parquet(staging / "pairs.parquet", index=False)
    meta = {
        "prepared_data_version": data_version or ref.data_version,
        "counts": pair_counts(table),
        "overlaps": pairs.overlaps(table),
        "settings": settings.pairs.model_dump(),
    }
    (staging / "meta.json").write_text(json.dumps(meta, indent=2))
    swap_in(staging, target)
    version = snapshots.track(target, settings)
    log.info("pairwise table: %d rows, %s", len(table), json.dumps(meta["counts"]))
    return {
        "pairs_dir": str(target),
        "pairs_version": version,
        "prepared_dir": str(prepared_dir),
        "rows": len(table),
        "validation": validation,
        **{k: meta[k] for k in ("counts", "overlaps", "prepared_data_version")},
    }


def locate_pairs(settings: Settings) -> dict:
    """The current pairwise table and its DVC version (DataError if none: run `recsys pairs`)."""
    from recsys.data.snapshots import data_version
    from recsys.errors import DataError

    folder = home.pairs_dir(settings)
    if not (folder / "pairs.parquet").is_file():
        raise DataError(f"no pairwise table in {folder}; run `recsys pairs` first")
    return {"pairs_dir": str(folder), "pairs_version": data_version(folder)}


def _load_pairs(pairs_folder: str):  # noqa: ANN202 - a pairs frame
    return read_parquet(Path(pairs_folder) / "pairs.parquet", fix="run `recsys pairs` again")


@locked("similar_model")
def train_similar(settings: Settings, pairs_folder: str, prepared_dir: str, pairs_version: str = "") -> dict:
    """Train the item tower (its own MLflow run) and register a ``movie_similar`` version. With
    ``similar.init`` two_tower its id embeddings start from the ``two_tower`` champion's item
    vectors, so it runs after that model's gate (random, with a warning, while there is none)."""
    from recsys.data.snapshots import data_version
    from recsys.tracking.similar import run_similar_training, two_tower_vectors

    prepared = PreparedRef.at(prepared_dir).load()
    catalogue = prepared.catalogue
    return run_similar_training(
        settings,
        Registry.open(settings, MOVIE_SIMILAR),
        _load_pairs(pairs_folder),
        catalogue,
        pairs_version or data_version(Path(pairs_folder)),
        two_tower_vectors(Registry.open(settings, TWO_TOWER), catalogue),
        rare=prepared.tail["movie_id"] if prepared.tail is not None else None,
    )


@locked("similar_model")
def promote_similar(settings: Settings, trained: dict, pairs_folder: str, force: bool = False) -> dict:
    """The gate of ``movie_similar``: ``champion`` moves to the new version only if its Recall@10
    on the current table's validation queries beats the champion's, scored alike from each
    version's item vectors, the genre-only baseline's and the ``two_tower`` champion's own item
    vectors' (or ``force``)."""
    from recsys.runtime.similar import SimilarBundle
    from recsys.tracking.similar import similar_gate, two_tower_vectors

    models = Registry.open(settings, MOVIE_SIMILAR)
    _, folder = models.download_bundle(str(trained["version"]))
    reference = two_tower_vectors(Registry.open(settings, TWO_TOWER), SimilarBundle.load(folder).catalogue)
    return similar_gate(models, trained["version"], _load_pairs(pairs_folder), force, reference)
