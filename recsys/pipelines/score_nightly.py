"""The tasks of DAG ``recsys_score_nightly``: pin the champion and today's prepared data, score the
users in shards, merge and validate the lists, publish them to Redis through Feast and read them
back; score and publish every movie's similar movies.

No retrain is needed for fresh lists: histories and seen sets come from the pinned prepared data.
Lists that fail suite ``recommendations`` are never written; publishing takes the ``data`` and
``publish`` locks (``similar_publish`` for the similar movies).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recsys import home
from recsys.config import Settings
from recsys.data.prepared import PreparedRef
from recsys.errors import DataError
from recsys.files import read_parquet, write_text
from recsys.ops.locks import locked
from recsys.ops.registry import CHAMPION, MOVIE_SIMILAR, TWO_TOWER, Registry

log = logging.getLogger(__name__)
RESCORE = "run `recsys score` again"


def plan_scoring(settings: Settings, ref: str = CHAMPION, shard_size: int | None = None) -> dict:
    """Pin the version behind ``ref`` and today's prepared data; split its users into shards of
    ``shard_size`` users (default: setting ``score.shard_size``)."""
    from recsys.runtime.scoring import read_activity

    shard_size = settings.score.shard_size if shard_size is None else shard_size
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    version = str(Registry.open(settings, TWO_TOWER).resolve(ref).version)
    pinned = PreparedRef.at(home.prepared_dir(settings))
    n_users = int(read_activity(pinned.folder, ["user_id"])["user_id"].nunique())
    return {
        "model_version": version,
        "n_users": n_users,
        "dataset": settings.data.dataset,
        **pinned.as_dict(),
        "n_shards": max(1, -(-n_users // shard_size)),
    }


def score(
    settings: Settings, ref: str = CHAMPION, shard: int = 0, n_shards: int = 1, pinned: dict | None = None
) -> dict:
    """Score shard ``shard`` of ``n_shards`` of today's users with the model's ONNX graph.

    ``pinned``: the prepared data (:meth:`PreparedRef.as_dict`) the run pinned; default: today's.
    Histories and seen sets come from the latest prepared activity (not from the model version):
    users who rated since training, and new users, get lists that reflect it.
    """
    from recsys.runtime.scoring import read_activity, score_users, user_inputs, write_recommendations
    from recsys.runtime.two_tower import ModelBundle

    if not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in 0..{n_shards - 1}, got {shard}")
    prepared = (
        PreparedRef.from_dict(pinned).check() if pinned else PreparedRef.at(home.prepared_dir(settings))
    )
    version, bundle_dir = Registry.open(settings, TWO_TOWER).download_bundle(ref)
    bundle = ModelBundle.load(bundle_dir, threads=settings.score.threads or None)
    activity = read_activity(prepared.folder)
    users = np.unique(activity["user_id"].to_numpy())[shard::n_shards]
    recs = score_users(
        bundle,
        user_inputs(activity, bundle, users),
        version,
        prepared.data_version,
        settings.score.batch_size,
        progress=settings.train.progress_bar,
    )
    out = home.scores_dir(settings, version, prepared.data_version)
    name = "recommendations.parquet" if n_shards == 1 else f"shard-{shard:04d}-of-{n_shards:04d}.parquet"
    path = write_recommendations(recs, out / name)
    # Every shard writes the same two files: atomic replaces, so a reader never sees half a file.
    write_recommendations(bundle.catalogue[["movie_id", "title", "train_count"]], out / "catalogue.parquet")
    meta = {"model_version": version, **prepared.as_dict(), "k": bundle.k, "user_tower": bundle.user_tower}
    write_text(json.dumps(meta, indent=2), out / "scoring.json")
    return {
        "recommendations": str(path),
        "model_version": version,
        "data_version": prepared.data_version,
        "n_users": len(recs),
        "n_popular": int((recs["source"] == "popular").sum()),
    }


def scoring_meta(recommendations: Path) -> dict:
    """The scoring.json beside a recommendations file (model and data versions, K); DataError if
    it is missing or damaged."""
    path = Path(recommendations).parent / "scoring.json"
    try:
        meta = json.loads(path.read_text())
        _ = int(meta["k"]), meta["prepared_dir"], meta["data_version"]  # present and readable
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is missing or damaged ({type(exc).__name__}: {exc}); {RESCORE}") from exc
    return meta


def merge_recommendations(settings: Settings, shards: list[str]) -> dict:
    """Concatenate scored shard files (one model version) into recommendations.parquet beside them.

    Raises DataError when the shards mix model versions or folders, or repeat a user.
    """
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


def validate_recommendations(settings: Settings, recommendations: str) -> dict:
    """Run suite recommendations (K per user, no duplicates, no rated item, sorted scores).

    The rated pairs are today's activity of the prepared data the lists were built from.
    """
    from recsys.data.validation import validate_recommendations as check
    from recsys.runtime.scoring import read_activity, read_recommendations

    path = Path(recommendations)
    recs = read_recommendations(path)
    meta = scoring_meta(path)
    prepared = PreparedRef.from_dict(meta).check()
    rated = read_activity(prepared.folder, ["user_id", "movie_id"])
    n_items = len(read_parquet(path.parent / "catalogue.parquet", fix=RESCORE))
    return check(recs, rated, min(int(meta["k"]), n_items), home.data_docs(settings))


@locked("data", "publish")
def publish(settings: Settings, recommendations: str) -> dict:
    """Write validated lists, recent histories and titles into Redis through Feast; read back."""
    from recsys.online import feast_repo, verify, writer
    from recsys.ops import redis_server
    from recsys.runtime.scoring import read_recommendations

    path = Path(recommendations)
    recs = read_recommendations(path)
    histories = recs[["user_id", "history", "data_version", "event_timestamp"]].rename(
        columns={"history": "movie_ids"}
    )
    redis_server.ensure_running(settings)
    feast_repo.apply(settings)
    catalogue = read_parquet(path.parent / "catalogue.parquet", fix=RESCORE)
    written = writer.publish(recs, catalogue, settings, histories=histories)
    verified = verify.verify(recs, settings, settings.score.verify_sample, histories=histories)
    return {
        "written": written,
        "verified": verified,
        "model_version": str(recs["model_version"].iat[0]) if len(recs) else None,
        "data_version": str(recs["data_version"].iat[0]) if len(recs) else None,
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


def locate_similar_champion(settings: Settings) -> str:
    """The ``movie_similar`` champion's version; ModelNotFoundError while there is none."""
    return str(Registry.open(settings, MOVIE_SIMILAR).resolve(CHAMPION).version)


def score_similar(settings: Settings, ref: str = CHAMPION) -> dict:
    """Every movie's top-K similar movies from the ``movie_similar`` version behind ``ref``, with
    ONNX Runtime, checked (K per movie, no self, no repeats, sorted) into similar.parquet."""
    from recsys.runtime import similar
    from recsys.runtime.scoring import write_recommendations

    version, folder = Registry.open(settings, MOVIE_SIMILAR).download_bundle(ref)
    bundle = similar.SimilarBundle.load(folder, threads=settings.score.threads or None)
    pairs_version = str(bundle.meta.get("pairs_version", ""))
    lists = similar.score_similar(bundle, version, pairs_version, settings.similar.batch_queries)
    similar.check_similar(lists, bundle.k)
    path = write_recommendations(lists, home.similar_dir(settings, version) / "similar.parquet")
    return {"similar": str(path), "model_version": version, "movies": len(lists), "k": bundle.k}


@locked("similar_publish")
def publish_similar(settings: Settings, similar: str) -> dict:
    """Write each movie's similar movies (Feast view ``movie_similar``) into Redis and read a
    sample back through the fast path."""
    from recsys.online import feast_repo, verify, writer
    from recsys.ops import redis_server
    from recsys.runtime.similar import check_similar

    lists = read_parquet(Path(similar), fix="run `recsys publish-similar` again")
    check_similar(lists, min((len(x) for x in lists["movie_ids"]), default=1))
    redis_server.ensure_running(settings)
    feast_repo.apply(settings)
    written = writer.publish_similar(lists, settings)
    verified = verify.verify_similar(lists, settings, settings.score.verify_sample)
    return {
        "written": written,
        "verified": verified,
        "model_version": str(lists["model_version"].iat[0]) if len(lists) else None,
    }
