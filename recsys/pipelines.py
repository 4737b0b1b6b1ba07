"""One function per pipeline task. The CLI and the Airflow DAGs are thin shells over these.

Every function takes the resolved Settings plus paths/ids and returns a small JSON-able dict (paths
and ids, never data frames), so tasks can pass results through Airflow XCom. Nothing that is being
served is overwritten before the new data, model or lists have passed validation.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from recsys import data as data_mod
from recsys.config import Settings

log = logging.getLogger(__name__)


def ingest(settings: Settings, validate: bool = True) -> dict:
    """Snapshot the raw dataset into the DVC workspace.

    With ``validate`` the ratings_raw suite runs on the staged copy, so a snapshot that fails it
    never replaces the current one (ValidationFailed propagates).
    """
    from recsys import ingest as ingest_mod

    summary: dict = {}

    def check(folder: Path) -> None:
        summary.update(validate_raw(settings, str(folder)))

    result = ingest_mod.ingest(settings, check=check if validate else None)
    return {"dataset": result.dataset, "raw_dir": str(result.raw_dir),
            "data_version": result.data_version, "pushed": result.pushed,
            "validation": summary or None}


def validate_raw(settings: Settings, raw_dir: str) -> dict:
    """Run suite ratings_raw on the raw snapshot; raises ValidationFailed."""
    from recsys.validation import validate_ratings

    return validate_ratings(data_mod.load_ratings(Path(raw_dir) / "ratings.csv"))


def prepare(settings: Settings, raw_dir: str, data_version: str = "") -> dict:
    """Prepare by the protocol into a staging folder, validate it, then swap it in and track it."""
    from recsys import ingest as ingest_mod
    from recsys.validation import validate_interactions

    raw = Path(raw_dir)
    prepared = data_mod.prepare(data_mod.load_ratings(raw / "ratings.csv"),
                                data_mod.load_movies(raw / "movies.csv"), settings.data)
    prepared.meta["raw_data_version"] = data_version
    validate_interactions(prepared, settings.data.rating_threshold)
    target = ingest_mod.prepared_dir(settings)
    staging = target.with_name(target.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    data_mod.save_prepared(prepared, staging)
    _swap(staging, target)
    version = ingest_mod.track(target, settings)
    return {"prepared_dir": str(target), "data_version": version,
            **{k: v for k, v in prepared.meta.items() if k.startswith("n_")}}


def _swap(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` with two renames (the old copy is removed last)."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def train(settings: Settings, prepared_dir: str, data_version: str = "") -> dict:
    """Train, evaluate (valid + test, with MostPop beside it), log to MLflow, register a version."""
    from recsys.experiment import run_training

    return run_training(settings, data_mod.load_prepared(Path(prepared_dir)), data_version)


def promote(settings: Settings, version: str, force: bool = False) -> dict:
    """The promotion gate: ``champion`` moves only if ``version`` wins (or ``force``)."""
    from recsys import registry

    registry.configure(settings)
    outcome = registry.promote_if_better(settings, version, force=force)
    return {"version": outcome.version, "promoted": outcome.promoted,
            "champion": outcome.version if outcome.promoted else outcome.previous,
            "previous": outcome.previous, "reason": outcome.reason}


def load_serving_model(settings: Settings, ref: str = "champion"):  # noqa: ANN201
    """(version, RecommenderModel with its context loaded) for a version number or alias."""
    import mlflow.pyfunc

    from recsys import registry

    registry.configure(settings)
    mv = registry.resolve(settings, ref)
    model = mlflow.pyfunc.load_model(f"models:/{mv.name}/{mv.version}")
    return str(mv.version), model.unwrap_python_model()


def score(settings: Settings, ref: str = "champion", shard: int = 0, n_shards: int = 1) -> dict:
    """Score shard ``shard`` of ``n_shards`` of the model's users with ONNX Runtime; write parquet."""
    from recsys.scoring import score_users, write_recommendations

    if not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in 0..{n_shards - 1}, got {shard}")
    version, model = load_serving_model(settings, ref)
    users = np.array(sorted(model.user_index.values()))[shard::n_shards]
    user_ids = np.array(list(model.user_index.keys()))[np.argsort(list(model.user_index.values()))]
    recs = score_users(model.retriever, users, user_ids[users], model.rated, model.movie_ids,
                       version, model.histories, settings.score.batch_size,
                       progress=settings.train.progress_bar)
    folder = settings.paths.home / "scores" / f"v{version}"
    name = "recommendations.parquet" if n_shards == 1 else f"shard-{shard:04d}-of-{n_shards:04d}.parquet"
    path = write_recommendations(recs, folder / name)
    model.catalogue[["movie_id", "title", "train_count"]].to_parquet(folder / "catalogue.parquet")
    _rated_pairs(model).to_parquet(folder / "rated.parquet")
    return {"recommendations": str(path), "model_version": version, "n_users": len(recs)}


def _rated_pairs(model) -> pd.DataFrame:  # noqa: ANN001
    ids = {idx: uid for uid, idx in model.user_index.items()}
    rows = [(ids[u], int(model.movie_ids[i])) for u, items in enumerate(model.rated) for i in items]
    return pd.DataFrame(rows, columns=["user_id", "movie_id"])


def validate_recommendations(settings: Settings, recommendations: str) -> dict:
    """Run suite recommendations (K per user, no duplicates, no seen item, sorted scores)."""
    from recsys.scoring import read_recommendations
    from recsys.validation import validate_recommendations as check

    path = Path(recommendations)
    recs = read_recommendations(path)
    rated = pd.read_parquet(path.parent / "rated.parquet")
    n_items = len(pd.read_parquet(path.parent / "catalogue.parquet"))
    return check(recs, rated, min(settings.score.k, n_items))


def publish(settings: Settings, recommendations: str) -> dict:
    """Write validated lists (and titles) into Redis through Feast, then read a sample back."""
    from recsys import redis_server, store
    from recsys.scoring import read_recommendations

    path = Path(recommendations)
    recs = read_recommendations(path)
    redis_server.ensure_running(settings)
    store.apply(settings)
    written = store.publish(recs, pd.read_parquet(path.parent / "catalogue.parquet"), settings)
    verified = store.verify(recs, settings, settings.score.verify_sample)
    return {"written": written, "verified": verified}


def run_all(settings: Settings, force_promotion: bool = False) -> dict:
    """The whole chain on one machine: ingest -> ... -> publish. Returns each step's result."""
    steps: dict[str, dict] = {}
    steps["ingest"] = ingest(settings, validate=True)
    steps["prepare"] = prepare(settings, steps["ingest"]["raw_dir"], steps["ingest"]["data_version"])
    steps["train"] = train(settings, steps["prepare"]["prepared_dir"], steps["prepare"]["data_version"])
    steps["promote"] = promote(settings, steps["train"]["version"], force=force_promotion)
    steps["score"] = score(settings, "champion")
    steps["validate_recommendations"] = validate_recommendations(
        settings, steps["score"]["recommendations"])
    steps["publish"] = publish(settings, steps["score"]["recommendations"])
    log.info("chain done: %s", json.dumps(steps, default=str)[:2000])
    return steps


# --- Steps only the Airflow DAGs use: re-validation in place, sharded scoring, read-back checks.


def validate_prepared(settings: Settings, prepared_dir: str) -> dict:
    """Re-run suite interactions on the prepared data in place; raises ValidationFailed."""
    from recsys.validation import validate_interactions

    prepared = data_mod.load_prepared(Path(prepared_dir))
    return validate_interactions(prepared, settings.data.rating_threshold)


def locate_prepared(settings: Settings) -> dict:
    """The current prepared data of ``data.dataset`` and its DVC version (DataError if none)."""
    from recsys import ingest as ingest_mod

    folder = ingest_mod.prepared_dir(settings)
    return {"dataset": settings.data.dataset, "prepared_dir": str(folder),
            "data_version": ingest_mod.data_version(folder)}


def compare(settings: Settings, version: str) -> dict:
    """Validation NDCG@10 of ``version`` beside the champion's and MostPop's (from its MLflow run).

    ``champion`` is None when no version holds the alias; raises ModelNotFoundError for ``version``.
    """
    import mlflow

    from recsys import registry

    registry.configure(settings)
    candidate = registry.resolve(settings, version)
    metrics = mlflow.get_run(candidate.run_id).data.metrics
    current = registry.champion_version(settings)
    out = {"version": str(version), registry.GATE_METRIC: float(candidate.tags[registry.GATE_METRIC]),
           "mostpop": metrics.get(f"mostpop_{registry.GATE_METRIC}"), "champion": current,
           "champion_" + registry.GATE_METRIC: None}
    if current is not None:
        out["champion_" + registry.GATE_METRIC] = float(
            registry.resolve(settings, current).tags[registry.GATE_METRIC])
    out["beats_mostpop"] = out["mostpop"] is not None and out[registry.GATE_METRIC] > out["mostpop"]
    return out


def plan_scoring(settings: Settings, ref: str = "champion", shard_size: int = 25_000) -> dict:
    """Pin the version behind ``ref`` and split its users into shards of at most ``shard_size``."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    version, model = load_serving_model(settings, ref)
    n_users = len(model.user_index)
    return {"model_version": version, "n_users": n_users,
            "n_shards": max(1, -(-n_users // shard_size))}


def merge_recommendations(settings: Settings, shards: list[str]) -> dict:
    """Concatenate scored shard files (one model version) into recommendations.parquet beside them.

    Raises DataError when the shards mix model versions or folders, or repeat a user.
    """
    from recsys.errors import DataError
    from recsys.scoring import read_recommendations, write_recommendations

    paths = [Path(p) for p in shards]
    if not paths or len({p.parent for p in paths}) != 1:
        raise DataError(f"expected shard files of one scoring folder, got {shards}")
    recs = pd.concat([read_recommendations(p) for p in paths], ignore_index=True)
    if recs["model_version"].nunique() != 1 or recs["user_id"].duplicated().any():
        raise DataError(f"shards {shards} mix model versions or repeat users; score them again")
    recs = recs.sort_values("user_id", ignore_index=True)
    path = write_recommendations(recs, paths[0].parent / "recommendations.parquet")
    return {"recommendations": str(path), "model_version": str(recs["model_version"].iat[0]),
            "n_users": len(recs), "n_shards": len(paths)}


def verify_lookups(settings: Settings, recommendations: str, sample: int = 20) -> dict:
    """Read a fixed sample of users through the fast lookup path and compare with the scored lists.

    Raises StoreError naming the first user whose served list differs.
    """
    from recsys.errors import StoreError
    from recsys.lookup import MAX_K, lookup_many
    from recsys.scoring import read_recommendations

    recs = read_recommendations(Path(recommendations))
    chosen = recs.sample(n=min(sample, len(recs)), random_state=1) if sample > 0 else recs.iloc[:0]
    k = min(MAX_K, settings.score.k)
    served = lookup_many(chosen["user_id"].tolist(), k, settings) if len(chosen) else {}
    for user_id, items in zip(chosen["user_id"], chosen["item_ids"]):
        got = [m for m, _, _ in served[int(user_id)]]
        if got != [int(i) for i in items[:k]]:
            raise StoreError(f"user {user_id}: the served list differs from {recommendations}; "
                             "re-run publish")
    return {"checked": len(chosen), "k": k}
