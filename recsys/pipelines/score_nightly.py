"""The tasks of DAG ``recsys_score_nightly``: pin the champion and today's prepared data, score the
users in shards, merge and validate the lists, publish them to Redis through Feast and read them
back; score and publish every movie's similar movies.

No retrain is needed for fresh lists: histories and seen sets come from the pinned prepared data.
With a canary (recsys.tracking.canary), each user is scored by the version of its arm
(recsys.runtime.arms) and every list records its ``arm`` and ``model_version``.
Lists that fail suite ``recommendations`` are never written; publishing takes the ``data`` and
``publish`` locks (``similar_publish`` for the similar movies).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys import home
from recsys.config import Settings
from recsys.errors import DataError
from recsys.files import read_parquet, write_text
from recsys.ops.locks import locked
from recsys.ops.registry import CHAMPION, MOVIE_SIMILAR, TWO_TOWER, Registry
from recsys.pipelines import night
from recsys.runtime.arms import CHAMPION_ARM, Arms

log = logging.getLogger(__name__)
RESCORE = "run `recsys score` again"
RESCORED = "rescored.parquet"  # an incremental night's re-scored rows, beside the merged lists
REPORTED_USERS = 1000  # re-scored user ids a night's result names (the count is always whole)


def plan_scoring(
    settings: Settings, ref: str = CHAMPION, shard_size: int | None = None, full: bool = False
) -> dict:
    """Pin the version behind ``ref`` and tonight's data, decide who is scored (all users, or those
    whose ratings changed since the lists served now: recsys.pipelines.night), and split them into
    shards of ``shard_size`` users (default: setting ``score.shard_size``)."""
    shard_size = settings.score.shard_size if shard_size is None else shard_size
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    from recsys.tracking import canary

    registry = Registry.open(settings, TWO_TOWER)
    version = str(registry.resolve(ref).version)
    # the canary serves its slice only on nights of the champion; another ref serves everyone
    arms = canary.arms(registry) if ref == CHAMPION else Arms(version)
    if arms.champion != version:  # the alias moved between the two reads: plan on the newer arms
        version = arms.champion
    new_movies_count = any(_reads_content(settings, v) for v in set(arms.versions().values()))
    plan = night.plan(settings, version, full, arms, new_movies_count)
    n_users = len(night.users(plan))
    log.info(
        "tonight: %s scoring of %d users (%s); arms %s",
        plan["mode"],
        n_users,
        plan["reason"],
        arms.versions(),
    )
    return {
        **plan,
        "dataset": settings.data.dataset,
        "n_users": n_users,
        "n_shards": max(1, -(-n_users // shard_size)),
    }


def _reads_content(settings: Settings, version: str) -> bool:
    """True when ``version`` embeds movies from their features (new movies reach its lists)."""
    from recsys.runtime.two_tower import ModelBundle

    return ModelBundle.load(Registry.open(settings, TWO_TOWER).download_bundle(version)[1]).reads_content


def score(
    settings: Settings,
    ref: str = CHAMPION,
    shard: int = 0,
    n_shards: int = 1,
    pinned: dict | None = None,
    full: bool = False,
) -> dict:
    """Score shard ``shard`` of ``n_shards`` of tonight's users with the ONNX graph of each one's
    arm (the champion's, or the canary's for its slice).

    ``pinned``: the night :func:`plan_scoring` planned; default: plan it now (``full``: everyone).
    Histories and seen sets come from the pinned data (prepared activity plus the nights after it),
    not from the model version: users who rated since training, and new users, get lists that
    reflect it. With one shard the lists are merged at once (:func:`merge_recommendations`).
    """
    from recsys.online import blocklist
    from recsys.runtime.scoring import write_recommendations

    if not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in 0..{n_shards - 1}, got {shard}")
    plan = night.check(pinned) if pinned else plan_scoring(settings, ref, full=full)
    arms = Arms.from_dict(plan.get("arms"), champion=plan["model_version"])
    users = night.users(plan)[shard::n_shards]
    ratings = night.ratings(plan, users)
    pinned_list = plan.get("blocked")  # the plan's takedown list, left out like seen movies
    blocked = set(pinned_list) if pinned_list is not None else blocklist.blocked_for_scoring(settings)
    assigned = arms.assign(users)
    scored, catalogues, ks = [], [], {}
    for arm, version in arms.versions().items():
        recs, bundle = _score_arm(settings, plan, version, users[assigned == arm], ratings, blocked)
        scored.append(recs.assign(arm=arm))
        catalogues.append(bundle.catalogue[["movie_id", "title", "train_count"]])
        ks[arm] = bundle.k
    recs = pd.concat(scored, ignore_index=True).sort_values("user_id", ignore_index=True)
    out = home.scores_dir(settings, arms.label, plan["snapshot_version"])
    path = write_recommendations(recs, out / f"shard-{shard:04d}-of-{n_shards:04d}.parquet")
    # Every shard writes the same two files: atomic replaces, so a reader never sees half a file.
    catalogue = pd.concat(catalogues, ignore_index=True).drop_duplicates("movie_id", ignore_index=True)
    write_recommendations(catalogue, out / "catalogue.parquet")
    meta = {**plan, "model_version": arms.champion, "k": ks[CHAMPION_ARM], "arm_k": ks}
    write_text(json.dumps(meta, indent=2), out / "scoring.json")
    if n_shards == 1:
        return {**merge_recommendations(settings, [str(path)]), "shard": str(path)}
    return {"shard": str(path), "model_version": arms.champion, "n_users": len(recs), **_counts(recs)}


def _score_arm(
    settings: Settings, plan: dict, version: str, users: Any, ratings: pd.DataFrame, blocked: set[int]
) -> tuple[pd.DataFrame, Any]:
    """(lists of ``users`` by model ``version``, its loaded ModelBundle)."""
    from recsys.data import eventlog
    from recsys.runtime.scoring import score_users, user_inputs, without_movies
    from recsys.runtime.two_tower import ModelBundle

    version, bundle_dir = Registry.open(settings, TWO_TOWER).download_bundle(version)
    bundle = ModelBundle.load(bundle_dir, threads=settings.score.threads or None)
    if bundle.reads_content:  # tonight's catalogue: the movies new since training too
        movies = eventlog.current_movies(Path(plan["raw_dir"]))
        bundle = bundle.with_movies(movies, settings.score.fresh_slots)
    inputs = without_movies(user_inputs(ratings, bundle, users), bundle, blocked)
    batch, progress = settings.score.batch_size, settings.train.progress_bar
    recs = score_users(
        bundle, inputs, version, plan["snapshot_version"], batch, progress, explain=settings.score.explain
    )
    return recs, bundle


def _counts(recs: pd.DataFrame) -> dict:
    return {
        "data_version": str(recs["data_version"].iat[0]) if len(recs) else "",
        "n_popular": int((recs["source"] == "popular").sum()),
    }


def scoring_meta(recommendations: Path) -> dict:
    """The scoring.json beside a recommendations file (the night's plan, model version, K);
    DataError if it is missing or damaged."""
    path = Path(recommendations).parent / "scoring.json"
    try:
        meta = json.loads(path.read_text())
        _ = int(meta["k"]), meta["prepared_dir"], meta["snapshot_version"], meta["mode"]  # readable
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is missing or damaged ({type(exc).__name__}: {exc}); {RESCORE}") from exc
    return meta


def merge_recommendations(settings: Settings, shards: list[str]) -> dict:
    """The night's lists: the scored shards (one model version), and in an incremental night the
    served lists of every user not re-scored, into recommendations.parquet beside the shards; the
    re-scored rows alone also into rescored.parquet.

    Raises DataError when the shards mix model versions or folders, or repeat a user.
    """
    from recsys.runtime.scoring import read_recommendations, write_recommendations

    paths = [Path(p) for p in shards]
    if not paths or len({p.parent for p in paths}) != 1:
        raise DataError(f"expected shard files of one scoring folder, got {shards}")
    meta = scoring_meta(paths[0])
    scored = pd.concat([read_recommendations(p) for p in paths], ignore_index=True)
    versions = Arms.from_dict(meta.get("arms"), champion=str(meta["model_version"])).versions()
    off_arm = scored["model_version"].astype(str) != scored["arm"].map(versions)
    if off_arm.any() or scored["data_version"].nunique() > 1 or scored["user_id"].duplicated().any():
        raise DataError(
            f"shards {shards} hold a list of a version its arm does not serve tonight ({versions}), "
            "mix data versions, or repeat users; score them again"
        )
    scored = scored.sort_values("user_id", ignore_index=True)
    folder = paths[0].parent
    recs = scored
    if meta["mode"] == "incremental":
        kept = read_recommendations(Path(meta["served"]))
        if "arm" not in kept.columns:  # lists scored before arms: all the champion's
            kept = kept.assign(arm=CHAMPION_ARM)
        if "because_ids" not in kept.columns:  # lists scored before reasons: none
            kept = kept.assign(because_ids=[np.empty(0, dtype=np.int64)] * len(kept))
        recs = pd.concat([kept[~kept["user_id"].isin(scored["user_id"])], scored], ignore_index=True)
        recs = recs.sort_values("user_id", ignore_index=True)
        write_recommendations(scored, folder / RESCORED)
    path = write_recommendations(recs, folder / "recommendations.parquet")
    n_users = len(recs)
    meta.update(n_users=n_users, n_rescored=len(scored))
    write_text(json.dumps(meta, indent=2), folder / "scoring.json")
    return {
        "recommendations": str(path),
        "model_version": str(meta["model_version"]),
        "mode": meta["mode"],
        "reason": meta["reason"],
        "n_users": n_users,
        "n_rescored": len(scored),
        "rescored_users": scored["user_id"].head(REPORTED_USERS).tolist(),
        "n_shards": len(paths),
        **_counts(scored),
        "data_version": meta["snapshot_version"],
    }


def rescored(recommendations: Path) -> pd.DataFrame:
    """The rows the night behind ``recommendations`` scored (all of them in a full night)."""
    from recsys.runtime.scoring import read_recommendations

    meta = scoring_meta(recommendations)
    path = Path(recommendations)
    return read_recommendations(path.with_name(RESCORED) if meta["mode"] == "incremental" else path)


def validate_recommendations(settings: Settings, recommendations: str) -> dict:
    """Run suite recommendations (K per user, no duplicates, no rated item, sorted scores) on the
    lists the night scored; the lists it carried over passed on the night that scored them.

    The rated pairs are the pinned data's ratings of those users. An incremental night that
    re-scored nobody (a quiet day: no events, or none that changed a user) has nothing to validate.
    """
    from recsys.data.validation import validate_recommendations as check

    path = Path(recommendations)
    meta = night.check(scoring_meta(path))
    recs = rescored(path)
    if recs.empty and meta["mode"] == "incremental":
        log.info("validation of suite recommendations skipped: nobody was re-scored tonight")
        return {"suite": "recommendations", "success": True, "rows": 0, "skipped": "nobody was re-scored"}
    rated = night.ratings(meta, recs["user_id"].to_numpy())[["user_id", "movie_id"]]
    catalogue = read_parquet(path.parent / "catalogue.parquet", fix=RESCORE)
    n_items = len(catalogue)
    arm_k = meta.get("arm_k") or {CHAMPION_ARM: int(meta["k"])}
    arms = recs["arm"] if "arm" in recs.columns else pd.Series(CHAMPION_ARM, index=recs.index)
    summary: dict = {}
    for k in sorted({int(v) for v in arm_k.values()}):  # one run of the suite per list length
        mine = recs[arms.map(arm_k).astype(int) == k]
        if len(mine):
            checked = check(mine, rated, min(k, n_items), home.data_docs(settings), catalogue)
            summary = _merge_summaries(summary, checked)
    return summary


def _merge_summaries(before: dict, after: dict) -> dict:
    """One summary of the suite's runs on each list length (rows add up)."""
    if not before:
        return after
    return {**after, "rows": int(before.get("rows", 0)) + int(after.get("rows", 0))}


@locked("data", "publish")
def publish(settings: Settings, recommendations: str) -> dict:
    """Write the lists the night scored, their recent histories and the titles into Redis through
    Feast's layout, read a sample back, and record the night's lists as the ones served now.

    Feast itself is imported only when the repo must be registered again (recsys.online.feast_repo)
    and, in a full night, for the read-back."""
    from recsys.online import feast_repo, publication, verify, writer
    from recsys.ops import redis_server
    from recsys.runtime.scoring import read_recommendations

    path = Path(recommendations)
    meta = scoring_meta(path)
    recs = rescored(path)
    everyone = read_recommendations(path, ["user_id"])["user_id"]
    histories = recs[["user_id", "history", "data_version", "event_timestamp"]].rename(
        columns={"history": "movie_ids"}
    )
    redis_server.ensure_running(settings)
    feast_repo.apply(settings)
    catalogue = read_parquet(path.parent / "catalogue.parquet", fix=RESCORE)
    arms = Arms.from_dict(meta.get("arms"), champion=str(meta["model_version"]))
    written = writer.publish(
        recs, catalogue, settings, histories=histories, served_users=everyone.tolist(), arms=arms
    )
    # A full night reads its sample back through Feast itself; an incremental one through the
    # registered layouts (no 8 s Feast import for a few hundred rows; Feast when none is registered).
    through: verify.Through = "registered" if meta["mode"] == "incremental" else "feast"
    verified = verify.verify(recs, settings, settings.score.verify_sample, histories, through)
    served = read_recommendations(path, ["item_ids", "event_timestamp"])
    new = new_movie_counts(catalogue, served["item_ids"])
    conn = redis_server.client(settings.redis_connection)
    try:
        oldest = writer.scored_at(pd.Series([served["event_timestamp"].min()]))[0]
        publication.note_night(conn, meta["mode"], len(recs), oldest, **new)
    finally:
        conn.close()
    night.record_served(settings, meta, str(path), len(recs), len(everyone))
    return {
        "written": written,
        "verified": verified,
        "mode": meta["mode"],
        "rescored": len(recs),
        "model_version": str(meta["model_version"]),
        "data_version": str(meta["snapshot_version"]),
        **new,
    }


def new_movie_counts(catalogue: pd.DataFrame, lists: pd.Series) -> dict[str, int]:
    """``new_movies``: the served catalogue's movies without a training positive (new since
    training; only a content item tower lists them); ``lists_with_new``: lists with at least one."""
    new = catalogue["movie_id"].to_numpy(np.int64)[catalogue["train_count"].to_numpy() <= 0]
    if not len(new) or not len(lists):
        return {"new_movies": len(new), "lists_with_new": 0}
    sizes = np.fromiter((len(items) for items in lists), dtype=np.int64, count=len(lists))
    hits = np.isin(np.concatenate([np.asarray(items, np.int64) for items in lists]), new)
    rows = np.repeat(np.arange(len(lists)), sizes)
    return {"new_movies": len(new), "lists_with_new": int(len(np.unique(rows[hits])))}


def verify_lookups(settings: Settings, recommendations: str, sample: int = 20) -> dict:
    """Read a fixed sample of users through the fast lookup path and compare with the scored lists.

    Raises StoreError naming the first user whose served list differs.
    """
    from recsys.errors import StoreError
    from recsys.online import blocklist
    from recsys.online.reader import lookup_many
    from recsys.runtime.scoring import read_recommendations

    path = Path(recommendations)
    recs = read_recommendations(path)
    chosen = recs.sample(n=min(sample, len(recs)), random_state=1) if sample > 0 else recs.iloc[:0]
    blocked = set(blocklist.blocked(settings)) if len(chosen) else set()
    # what a reader must get: the scored list without the blocked movies (a takedown holds at once)
    expected = [[int(i) for i in items if int(i) not in blocked] for items in chosen["item_ids"]]
    k = int(scoring_meta(path)["k"])  # the model version's K
    if len(chosen):  # a user with fewer than K unseen items holds a shorter list
        k = min(k, *(len(items) for items in expected))
    served = lookup_many(chosen["user_id"].tolist(), k, settings) if len(chosen) and k else {}
    for user_id, items in zip(chosen["user_id"], expected):
        got = [m for m, _, _ in served[int(user_id)]] if k else []
        if got != items[:k]:
            raise StoreError(
                f"user {user_id}: the served list differs from {recommendations}; re-run publish"
            )
    return {"checked": len(chosen), "k": k}


def locate_similar_champion(settings: Settings) -> str:
    """The ``movie_similar`` champion's version; ModelNotFoundError while there is none."""
    return str(Registry.open(settings, MOVIE_SIMILAR).resolve(CHAMPION).version)


def score_similar(settings: Settings, ref: str = CHAMPION) -> dict:
    """Every movie of the snapshot's ``movies.csv`` with its top-K similar movies from the
    ``movie_similar`` version behind ``ref`` (ONNX Runtime; recsys.runtime.similar: a movie it was
    not trained on is embedded from its features), checked, into similar.parquet."""
    from recsys.data import eventlog
    from recsys.runtime import similar
    from recsys.runtime.scoring import write_recommendations

    version, folder = Registry.open(settings, MOVIE_SIMILAR).download_bundle(ref)
    bundle = similar.SimilarBundle.load(folder, threads=settings.score.threads or None)
    bundle = bundle.with_movies(eventlog.current_movies(home.raw_dir(settings)))  # DataError: no snapshot
    cfg, pairs_version = settings.similar, str(bundle.meta.get("pairs_version", ""))
    lists = similar.score_similar(bundle, version, pairs_version, cfg.batch_queries, cfg.fresh_slots)
    similar.check_similar(lists, bundle.k)
    path = write_recommendations(lists, home.similar_dir(settings, version) / "similar.parquet")
    content = int((lists["source"] == similar.CONTENT).sum())  # embedded from their features
    return {
        "similar": str(path),
        "model_version": version,
        "movies": len(lists),
        "content": content,
        "k": bundle.k,
    }


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
