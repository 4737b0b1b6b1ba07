"""One function per pipeline task. The CLI and the Airflow DAGs are thin shells over these.

Every function takes the resolved Settings plus paths/ids and returns a small JSON-able dict (paths
and ids, never data frames), so tasks can pass results through Airflow XCom. Nothing that is being
served is overwritten before the new data, model or lists have passed validation. Steps that write
shared state run one at a time (recsys.ops.locks): ingest, prepare and mine_pairs take the ``data`` lock,
train and promote the ``model`` lock, publish the ``data`` and ``publish`` locks; the similar-movies
model and its view have locks of their own (``similar_model``, ``similar_publish``), so both
retrain branches and both publishes run side by side on Celery.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.config import Settings
from recsys.data import prepared as data_mod
from recsys.ops.locks import locked

log = logging.getLogger(__name__)
RESCORE = "run `recsys score` again"


def data_docs(settings: Settings) -> Path:
    """Where a failed validation writes its great-expectations Data Docs page (one folder per suite)."""
    return settings.paths.home / "data_docs"


@locked("data")
def ingest(settings: Settings, validate: bool = True) -> dict:
    """Snapshot the raw dataset into the DVC workspace.

    With ``validate`` the ratings_raw suite runs on the staged copy, so a snapshot that fails it
    never replaces the current one (ValidationFailed propagates).
    """
    from recsys.data import snapshots as ingest_mod

    summary: dict = {}

    def check(folder: Path) -> None:
        summary.update(validate_raw(settings, str(folder)))

    result = ingest_mod.ingest(settings, check=check if validate else None)
    return {
        "dataset": result.dataset,
        "raw_dir": str(result.raw_dir),
        "data_version": result.data_version,
        "pushed": result.pushed,
        "validation": summary or None,
    }


def validate_raw(settings: Settings, raw_dir: str) -> dict:
    """Run suite ratings_raw on the raw snapshot; raises ValidationFailed."""
    from recsys.data.validation import validate_ratings

    return validate_ratings(data_mod.load_ratings(Path(raw_dir) / "ratings.csv"), data_docs(settings))


@locked("data")
def prepare(settings: Settings, raw_dir: str, data_version: str = "") -> dict:
    """Prepare by the protocol into a staging folder, validate it, then swap it in and track it."""
    from recsys.data import snapshots as ingest_mod
    from recsys.data.validation import validate_interactions

    raw = Path(raw_dir)
    prepared = data_mod.prepare(
        data_mod.load_ratings(raw / "ratings.csv"), data_mod.load_movies(raw / "movies.csv"), settings.data
    )
    prepared.meta["raw_data_version"] = data_version
    prepared.meta["prepared_id"] = uuid.uuid4().hex  # pins this folder's content for scoring runs
    validate_interactions(prepared, settings.data.rating_threshold, data_docs(settings))
    target = ingest_mod.prepared_dir(settings)
    staging = target.with_name(target.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    data_mod.save_prepared(prepared, staging)
    _swap(staging, target)
    version = ingest_mod.track(target, settings)
    return {
        "prepared_dir": str(target),
        "data_version": version,
        **{k: v for k, v in prepared.meta.items() if k.startswith("n_")},
    }


def _swap(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` with two renames (the old copy is removed last)."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


@locked("model")
def train(settings: Settings, prepared_dir: str, data_version: str = "") -> dict:
    """Train, evaluate (valid + test, with MostPop beside it), log to MLflow, register a version."""
    from recsys.tracking.two_tower import run_training

    return run_training(settings, data_mod.load_prepared(Path(prepared_dir)), data_version, prepared_dir)


def compare(settings: Settings, version: str, prepared_dir: str | None = None) -> dict:
    """Evaluate ``version``, the champion and MostPop alike on the current validation split.

    Both versions are scored by their own graphs from today's data (recsys.tracking.gate); the results are
    logged to the challenger's MLflow run. ``champion`` is None when no version holds the alias.
    """
    import mlflow

    from recsys.errors import DataError, ModelNotFoundError
    from recsys.ops import registry
    from recsys.runtime.two_tower import ModelBundle
    from recsys.tracking import gate

    registry.configure(settings)
    located = (
        locate_prepared(settings)
        if prepared_dir is None
        else {"prepared_dir": prepared_dir, "data_version": _data_version(Path(prepared_dir))}
    )
    prepared = data_mod.load_prepared(Path(located["prepared_dir"]))
    candidate = registry.resolve(settings, version)
    out: dict = {
        "version": str(version),
        "data_version": located["data_version"],
        "prepared_dir": located["prepared_dir"],
        "champion": None,
        "champion_metrics": None,
    }
    out["metrics"] = gate.evaluate_bundle(
        ModelBundle.load(registry.download_bundle(settings, version)[1]), prepared
    )
    out["mostpop_metrics"] = gate.mostpop_metrics(prepared)["valid"]
    current = registry.champion_version(settings)
    if current is not None and current != str(version):
        out["champion"] = current
        try:
            champion = ModelBundle.load(registry.download_bundle(settings, current)[1])
        except (ModelNotFoundError, DataError) as exc:
            # A champion from an older recsys cannot be re-scored; the challenger then has to beat
            # MostPop only, and the run says so.
            log.warning("champion v%s cannot be evaluated (%s); gating on MostPop only", current, exc)
            out["champion_unreadable"] = str(exc)
        else:
            out["champion_metrics"] = gate.evaluate_bundle(champion, prepared)
    logged = {f"gate_challenger_valid_{k}": v for k, v in out["metrics"].items()}
    logged.update({f"gate_mostpop_valid_{k}": v for k, v in out["mostpop_metrics"].items()})
    logged.update({f"gate_champion_valid_{k}": v for k, v in (out["champion_metrics"] or {}).items()})
    with mlflow.start_run(run_id=candidate.run_id):
        mlflow.log_metrics(logged)
        mlflow.set_tags({"gate_data_version": located["data_version"], "gate_champion": str(out["champion"])})
    return out


@locked("model")
def promote(settings: Settings, comparison: dict, force: bool = False) -> dict:
    """The promotion gate on a :func:`compare` result: ``champion`` moves only if the challenger
    beats MostPop and the champion on the same split (or ``force``). The decision is logged to
    the challenger's MLflow run and set as version tags. Raises ModelNotFoundError when the
    champion moved since the comparison (someone promoted by hand in between)."""
    import mlflow

    from recsys.errors import ModelNotFoundError
    from recsys.ops import registry
    from recsys.tracking import gate

    registry.configure(settings)
    metric = gate.GATE_METRIC
    evaluated = comparison.get("champion_metrics")
    decision = gate.decide(
        comparison["metrics"][metric],
        evaluated[metric] if evaluated else None,
        comparison["mostpop_metrics"][metric],
        force,
        comparison["champion"],
    )
    version = comparison["version"]
    previous = registry.champion_version(settings)
    if previous not in (comparison["champion"], version):
        raise ModelNotFoundError(
            f"the champion moved to v{previous} after version {version} was compared with "
            f"v{comparison['champion']}; run the comparison again"
        )
    if decision.promote and previous != version:
        registry.promote(settings, version, reason=decision.reason)
    tags = {
        "gate_decision": "promoted" if decision.promote else "kept_champion",
        "gate_reason": decision.reason,
    }
    candidate = registry.resolve(settings, version)
    with mlflow.start_run(run_id=candidate.run_id):
        mlflow.set_tags(tags)
    registry.tag_version(settings, version, tags)
    log.info("promotion gate for version %s: %s", version, decision.reason)
    return {
        "version": version,
        "promoted": decision.promote,
        "champion": version if decision.promote else previous,
        "previous": previous,
        "reason": decision.reason,
    }


def _data_version(folder: Path) -> str:
    from recsys.data import snapshots as ingest_mod

    return ingest_mod.data_version(folder)


def scoring_dir(settings: Settings, model_version: str, data_version: str) -> Path:
    """Where one model version's lists for one data version are written (the layout, once)."""
    return settings.paths.home / "scores" / f"v{model_version}" / data_version.replace(".dir", "")[:16]


def _prepared_id(folder: Path) -> str:
    """The id ``prepare`` wrote into meta.json before swapping the folder in (changes atomically)."""
    return str(json.loads((folder / "meta.json").read_text()).get("prepared_id", ""))


def _pinned_prepared(
    settings: Settings, prepared_dir: str | None, data_version: str | None, prepared_id: str | None = None
) -> tuple[Path, str]:
    """The prepared folder and its DVC version; DataError if it moved away from the pinned one.

    The DVC version is recorded just after the folder is swapped in, so the id in meta.json (part of
    the swapped folder) is checked as well: together they catch a prepare landing mid-run.
    """
    from recsys.errors import DataError

    folder = Path(prepared_dir) if prepared_dir else Path(locate_prepared(settings)["prepared_dir"])
    current, current_id = _data_version(folder), _prepared_id(folder)
    if (data_version and current != data_version) or (prepared_id and current_id != prepared_id):
        raise DataError(
            f"prepared data in {folder} is now version {current} ({current_id}), not the "
            f"pinned {data_version} ({prepared_id}): a new ingest landed during this run; "
            "run the scoring again"
        )
    return folder, current


def score(
    settings: Settings,
    ref: str = "champion",
    shard: int = 0,
    n_shards: int = 1,
    prepared_dir: str | None = None,
    data_version: str | None = None,
    prepared_id: str | None = None,
) -> dict:
    """Score shard ``shard`` of ``n_shards`` of today's users with the model's ONNX graph.

    Histories and seen sets come from the latest prepared activity (not from the model version):
    users who rated since training, and new users, get lists that reflect it.
    """
    from recsys.ops import registry
    from recsys.runtime.scoring import read_activity, score_users, user_inputs, write_recommendations
    from recsys.runtime.two_tower import ModelBundle

    if not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in 0..{n_shards - 1}, got {shard}")
    folder, data_version = _pinned_prepared(settings, prepared_dir, data_version, prepared_id)
    prepared_id = prepared_id or _prepared_id(folder)
    registry.configure(settings)
    version, bundle_dir = registry.download_bundle(settings, ref)
    bundle = ModelBundle.load(bundle_dir, threads=settings.score.threads or None)
    activity = read_activity(folder)
    users = np.unique(activity["user_id"].to_numpy())[shard::n_shards]
    recs = score_users(
        bundle,
        user_inputs(activity, bundle, users),
        version,
        data_version,
        settings.score.batch_size,
        progress=settings.train.progress_bar,
    )
    out = scoring_dir(settings, version, data_version)
    name = "recommendations.parquet" if n_shards == 1 else f"shard-{shard:04d}-of-{n_shards:04d}.parquet"
    path = write_recommendations(recs, out / name)
    # Every shard writes the same two files: atomic replaces, so a reader never sees half a file.
    write_recommendations(bundle.catalogue[["movie_id", "title", "train_count"]], out / "catalogue.parquet")
    meta = {
        "model_version": version,
        "data_version": data_version,
        "prepared_dir": str(folder),
        "prepared_id": prepared_id,
        "k": bundle.k,
        "user_tower": bundle.user_tower,
    }
    tmp = out / f"scoring.json.{shard}.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(out / "scoring.json")
    return {
        "recommendations": str(path),
        "model_version": version,
        "data_version": data_version,
        "n_users": len(recs),
        "n_popular": int((recs["source"] == "popular").sum()),
    }


def scoring_meta(recommendations: Path) -> dict:
    """The scoring.json beside a recommendations file (model and data versions, K); DataError if
    it is missing or damaged."""
    from recsys.errors import DataError

    path = Path(recommendations).parent / "scoring.json"
    try:
        meta = json.loads(path.read_text())
        _ = int(meta["k"]), meta["prepared_dir"], meta["data_version"]  # present and readable
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is missing or damaged ({type(exc).__name__}: {exc}); {RESCORE}") from exc
    return meta


def validate_recommendations(settings: Settings, recommendations: str) -> dict:
    """Run suite recommendations (K per user, no duplicates, no rated item, sorted scores).

    The rated pairs are today's activity of the prepared data the lists were built from.
    """
    from recsys.data.validation import validate_recommendations as check
    from recsys.runtime.scoring import read_activity, read_recommendations

    path = Path(recommendations)
    recs = read_recommendations(path)
    meta = scoring_meta(path)
    folder, _ = _pinned_prepared(
        settings, meta["prepared_dir"], meta["data_version"], meta.get("prepared_id")
    )
    rated = read_activity(folder, ["user_id", "movie_id"])
    n_items = len(data_mod.read_parquet(path.parent / "catalogue.parquet", fix=RESCORE))
    return check(recs, rated, min(int(meta["k"]), n_items), data_docs(settings))


@locked("data", "publish")
def publish(settings: Settings, recommendations: str) -> dict:
    """Write validated lists, recent histories and titles into Redis through Feast; read back."""
    from recsys.online import store
    from recsys.ops import redis_server
    from recsys.runtime.scoring import read_recommendations

    path = Path(recommendations)
    recs = read_recommendations(path)
    histories = recs[["user_id", "history", "data_version", "event_timestamp"]].rename(
        columns={"history": "movie_ids"}
    )
    redis_server.ensure_running(settings)
    store.apply(settings)
    catalogue = data_mod.read_parquet(path.parent / "catalogue.parquet", fix=RESCORE)
    written = store.publish(recs, catalogue, settings, histories=histories)
    verified = store.verify(recs, settings, settings.score.verify_sample, histories=histories)
    return {
        "written": written,
        "verified": verified,
        "model_version": str(recs["model_version"].iat[0]) if len(recs) else None,
        "data_version": str(recs["data_version"].iat[0]) if len(recs) else None,
    }


def run_all(settings: Settings, force_promotion: bool = False) -> dict:
    """The whole chain on one machine: ingest -> ... -> publish, then the similar movies (pairs ->
    item tower -> gate -> lists -> publish). Returns each step's result."""
    steps: dict[str, dict] = {}
    steps["ingest"] = ingest(settings, validate=True)
    steps["prepare"] = prepare(settings, steps["ingest"]["raw_dir"], steps["ingest"]["data_version"])
    steps["train"] = train(settings, steps["prepare"]["prepared_dir"], steps["prepare"]["data_version"])
    steps["compare"] = compare(settings, steps["train"]["version"], steps["prepare"]["prepared_dir"])
    steps["promote"] = promote(settings, steps["compare"], force=force_promotion)
    steps["score"] = score(settings, "champion", prepared_dir=steps["prepare"]["prepared_dir"])
    steps["validate_recommendations"] = validate_recommendations(settings, steps["score"]["recommendations"])
    steps["publish"] = publish(settings, steps["score"]["recommendations"])
    steps["similar"] = run_similar(
        settings, steps["prepare"]["prepared_dir"], steps["prepare"]["data_version"], force_promotion
    )
    log.info("chain done: %s", json.dumps(steps, default=str)[:2000])
    return steps


# --- Steps only the Airflow DAGs use: re-validation in place, sharded scoring, read-back checks.


def validate_prepared(settings: Settings, prepared_dir: str) -> dict:
    """Re-run suite interactions on the prepared data in place; raises ValidationFailed."""
    from recsys.data.validation import validate_interactions

    prepared = data_mod.load_prepared(Path(prepared_dir))
    return validate_interactions(prepared, settings.data.rating_threshold, data_docs(settings))


def locate_prepared(settings: Settings) -> dict:
    """The current prepared data of ``data.dataset`` and its DVC version (DataError if none)."""
    from recsys.data import snapshots as ingest_mod

    folder = ingest_mod.prepared_dir(settings)
    return {
        "dataset": settings.data.dataset,
        "prepared_dir": str(folder),
        "data_version": ingest_mod.data_version(folder),
    }


def plan_scoring(settings: Settings, ref: str = "champion", shard_size: int | None = None) -> dict:
    """Pin the version behind ``ref`` and today's prepared data; split its users into shards of
    ``shard_size`` users (default: setting ``score.shard_size``)."""
    from recsys.ops import registry
    from recsys.runtime.scoring import read_activity

    shard_size = settings.score.shard_size if shard_size is None else shard_size
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    registry.configure(settings)
    version = str(registry.resolve(settings, ref).version)
    located = locate_prepared(settings)
    located["prepared_id"] = _prepared_id(Path(located["prepared_dir"]))
    activity = read_activity(Path(located["prepared_dir"]), ["user_id"])
    n_users = int(activity["user_id"].nunique())
    return {
        "model_version": version,
        "n_users": n_users,
        **located,
        "n_shards": max(1, -(-n_users // shard_size)),
    }


def merge_recommendations(settings: Settings, shards: list[str]) -> dict:
    """Concatenate scored shard files (one model version) into recommendations.parquet beside them.

    Raises DataError when the shards mix model versions or folders, or repeat a user.
    """
    from recsys.errors import DataError
    from recsys.runtime.scoring import read_recommendations, write_recommendations

    paths = [Path(p) for p in shards]
    if not paths or len({p.parent for p in paths}) != 1:
        raise DataError(f"expected shard files of one scoring folder, got {shards}")
    recs = pd.concat([read_recommendations(p) for p in paths], ignore_index=True)
    mixed = recs["model_version"].nunique() != 1 or recs["data_version"].nunique() != 1
    if mixed or recs["user_id"].duplicated().any():
        raise DataError(f"shards {shards} mix model or data versions, or repeat users; score them again")
    recs = recs.sort_values("user_id", ignore_index=True)
    path = write_recommendations(recs, paths[0].parent / "recommendations.parquet")
    return {
        "recommendations": str(path),
        "model_version": str(recs["model_version"].iat[0]),
        "data_version": str(recs["data_version"].iat[0]),
        "n_users": len(recs),
        "n_popular": int((recs["source"] == "popular").sum()),
        "n_shards": len(paths),
    }


def verify_lookups(settings: Settings, recommendations: str, sample: int = 20) -> dict:
    """Read a fixed sample of users through the fast lookup path and compare with the scored lists.

    Raises StoreError naming the first user whose served list differs.
    """
    from recsys.errors import StoreError
    from recsys.online.reader import lookup_many
    from recsys.runtime.scoring import read_recommendations

    path = Path(recommendations)
    recs = read_recommendations(path)
    chosen = recs.sample(n=min(sample, len(recs)), random_state=1) if sample > 0 else recs.iloc[:0]
    k = int(scoring_meta(path)["k"])  # the model version's K
    if len(chosen):  # a user with fewer than K unseen items holds a shorter list
        k = min(k, *(len(items) for items in chosen["item_ids"]))
    served = lookup_many(chosen["user_id"].tolist(), k, settings) if len(chosen) else {}
    for user_id, items in zip(chosen["user_id"], chosen["item_ids"]):
        got = [m for m, _, _ in served[int(user_id)]]
        if got != [int(i) for i in items[:k]]:
            raise StoreError(
                f"user {user_id}: the served list differs from {recommendations}; re-run publish"
            )
    return {"checked": len(chosen), "k": k}


# --- "Similar movies": the pairwise table, the item tower, its gate, its lists (issue 9).


def similar_settings(settings: Settings) -> Settings:
    """``settings`` with MLflow pointed at the similar-movies experiment and registered model, so
    recsys.ops.registry serves ``movie_similar`` exactly as it serves ``two_tower``."""
    mlflow_cfg = settings.mlflow.model_copy(
        update={
            "experiment": settings.mlflow.similar_experiment,
            "model_name": settings.mlflow.similar_model_name,
        }
    )
    return settings.model_copy(update={"mlflow": mlflow_cfg})


def pairs_dir(settings: Settings, dataset: str | None = None) -> Path:
    """The pairwise table's folder ``pairs/<dataset>`` in the DVC workspace."""
    from recsys.data import snapshots as ingest_mod

    return ingest_mod.workspace(settings) / "pairs" / (dataset or settings.data.dataset)


def pair_counts(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Rows per kind and split, plus the positives that share no characteristic."""
    counts = table.groupby(["kind", "split"]).size()
    out: dict[str, dict[str, int]] = {
        kind: {split: int(counts.get((kind, split), 0)) for split in ("train", "valid", "test")}
        for kind in ("positive", "hard_negative", "soft_negative")
    }
    queries = table.groupby("split")["movie_id_first"].nunique()
    out["queries"] = {split: int(queries.get(split, 0)) for split in ("train", "valid", "test")}
    positives = table[table["kind"] == "positive"]
    out["positives_sharing_no_characteristic"] = {
        split: int((~positives[positives["split"] == split]["shares_characteristics"]).sum())
        for split in ("train", "valid", "test")
    }
    return out


@locked("data")
def mine_pairs(settings: Settings, prepared_dir: str, data_version: str = "") -> dict:
    """Mine the pairwise table from the prepared train split (recsys.data.pairs), validate it (suite
    ``pairs``), swap it in and track it with DVC. A table that fails validation replaces nothing."""
    from recsys.data import pairs
    from recsys.data import snapshots as ingest_mod
    from recsys.data.validation import validate_pairs

    prepared = data_mod.load_prepared(Path(prepared_dir))
    table = pairs.mine(prepared.split("train"), prepared.catalogue, settings.pairs)
    validation = validate_pairs(
        table, settings.pairs.min_positives, settings.pairs.max_positives, data_docs(settings)
    )
    target = pairs_dir(settings)
    staging = target.with_name(target.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    table.to_parquet(staging / "pairs.parquet", index=False)
    meta = {
        "prepared_data_version": data_version or _data_version(Path(prepared_dir)),
        "counts": pair_counts(table),
        "overlaps": pairs.overlaps(table),
        "settings": settings.pairs.model_dump(),
    }
    (staging / "meta.json").write_text(json.dumps(meta, indent=2))
    _swap(staging, target)
    version = ingest_mod.track(target, settings)
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
    from recsys.errors import DataError

    folder = pairs_dir(settings)
    if not (folder / "pairs.parquet").is_file():
        raise DataError(f"no pairwise table in {folder}; run `recsys pairs` first")
    return {"pairs_dir": str(folder), "pairs_version": _data_version(folder)}


def _load_pairs(pairs_folder: str) -> pd.DataFrame:
    return data_mod.read_parquet(Path(pairs_folder) / "pairs.parquet", fix="run `recsys pairs` again")


@locked("similar_model")
def train_similar(settings: Settings, pairs_folder: str, prepared_dir: str, pairs_version: str = "") -> dict:
    """Train the item tower (its own MLflow run) and register a ``movie_similar`` version. With
    ``similar.init`` two_tower its id embeddings start from the ``two_tower`` champion's item
    vectors, so it runs after that model's gate (random, with a warning, while there is none)."""
    from recsys.tracking.similar import run_similar_training, two_tower_vectors

    table = _load_pairs(pairs_folder)
    prepared = data_mod.load_prepared(Path(prepared_dir))
    return run_similar_training(
        similar_settings(settings),
        table,
        prepared.catalogue,
        pairs_version or _data_version(Path(pairs_folder)),
        two_tower_vectors(settings, prepared.catalogue),
    )


@locked("similar_model")
def promote_similar(settings: Settings, trained: dict, pairs_folder: str, force: bool = False) -> dict:
    """The gate of ``movie_similar``: ``champion`` moves to the new version only if its Recall@10
    on the current table's validation queries beats the champion's, scored alike from each
    version's item vectors, the genre-only baseline's and the ``two_tower`` champion's own item
    vectors' (or ``force``)."""
    from recsys.ops import registry
    from recsys.runtime.similar import SimilarBundle
    from recsys.tracking.similar import similar_gate, two_tower_vectors

    similar = similar_settings(settings)
    registry.configure(similar)
    _, folder = registry.download_bundle(similar, str(trained["version"]))
    reference = two_tower_vectors(settings, SimilarBundle.load(folder).catalogue)
    table = _load_pairs(pairs_folder)
    return similar_gate(similar, trained["version"], table, force, reference)


def similar_dir(settings: Settings, model_version: str) -> Path:
    """Where one movie_similar version's lists are written."""
    return settings.paths.home / "similar" / f"v{model_version}"


def locate_similar_champion(settings: Settings) -> str:
    """The ``movie_similar`` champion's version; ModelNotFoundError while there is none."""
    from recsys.ops import registry

    settings = similar_settings(settings)
    registry.configure(settings)
    return str(registry.resolve(settings, registry.CHAMPION).version)


def score_similar(settings: Settings, ref: str = "champion") -> dict:
    """Every movie's top-K similar movies from the ``movie_similar`` version behind ``ref``, with
    ONNX Runtime, checked (K per movie, no self, no repeats, sorted) into similar.parquet."""
    from recsys.ops import registry
    from recsys.runtime.scoring import write_recommendations
    from recsys.runtime.similar import SimilarBundle, check_similar
    from recsys.runtime.similar import score_similar as score_all

    settings = similar_settings(settings)
    registry.configure(settings)
    version, folder = registry.download_bundle(settings, ref)
    bundle = SimilarBundle.load(folder, threads=settings.score.threads or None)
    lists = score_all(
        bundle, version, str(bundle.meta.get("pairs_version", "")), settings.similar.batch_queries
    )
    check_similar(lists, bundle.k)
    path = write_recommendations(lists, similar_dir(settings, version) / "similar.parquet")
    return {"similar": str(path), "model_version": version, "movies": len(lists), "k": bundle.k}


@locked("similar_publish")
def publish_similar(settings: Settings, similar: str) -> dict:
    """Write each movie's similar movies (Feast view ``movie_similar``) into Redis and read a
    sample back through the fast path."""
    from recsys.online import store
    from recsys.ops import redis_server
    from recsys.runtime.similar import check_similar

    lists = data_mod.read_parquet(Path(similar), fix="run `recsys similar-score` again")
    check_similar(lists, min((len(x) for x in lists["movie_ids"]), default=1))
    redis_server.ensure_running(settings)
    store.apply(settings)
    written = store.publish_similar(lists, settings)
    verified = store.verify_similar(lists, settings, settings.score.verify_sample)
    return {
        "written": written,
        "verified": verified,
        "model_version": str(lists["model_version"].iat[0]) if len(lists) else None,
    }


def run_similar(settings: Settings, prepared_dir: str, data_version: str = "", force: bool = False) -> dict:
    """Mine -> train -> gate -> score -> publish the similar movies, on one machine."""
    steps: dict[str, dict] = {}
    steps["pairs"] = mine_pairs(settings, prepared_dir, data_version)
    steps["train"] = train_similar(
        settings, steps["pairs"]["pairs_dir"], prepared_dir, steps["pairs"]["pairs_version"]
    )
    steps["promote"] = promote_similar(settings, steps["train"], steps["pairs"]["pairs_dir"], force)
    steps["score"] = score_similar(settings, "champion")
    steps["publish"] = publish_similar(settings, steps["score"]["similar"])
    return steps
