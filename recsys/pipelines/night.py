"""One night of scoring, planned: which data, which users, and what is served now.

The data: the prepared activity (as of the nights it includes) plus the snapshot's later nights up to
the last one when the night is planned (recsys.data.eventlog), pinned with the snapshot's DVC
version, which becomes the lists' ``data_version``.

The users: everyone (``full``) when asked, when nothing is served yet, when the model version
changed, when the snapshot was replaced by a new release, or when the served lists' night is not
in the log; otherwise only the users whose ratings the nights after the served lists' night changed
(``incremental``), and the users whose arm or arm's version changed (a canary started, stopped or
resized: recsys.runtime.arms): a user whose history, seen set, arm and model version are unchanged
would get exactly the list served now.

A movie unblocked since the served lists were scored (recsys.online.blocklist) makes the night full:
the lists were scored without it. So does a movie added since then when a version serving tonight
has a content item tower: it may belong in anyone's list. The takedown list is pinned in the plan
for every shard.

What is served now: ``<home>/scores/served.json``, written after each publish (the merged lists'
file, model version, release, night, snapshot version, when, how many users were re-scored), with
the record before it under ``previous`` (yesterday's lists, for the churn of the online evaluation).

The plan is a JSON-able dict passed to every task of the night (Airflow XCom); each shard works
out its own users from it, so no list of users travels through XCom.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from recsys import home
from recsys.config import Settings
from recsys.data import eventlog, snapshots
from recsys.data.prepared import PreparedRef
from recsys.errors import DataError
from recsys.files import read_parquet, write_text
from recsys.runtime.arms import CHAMPION_ARM, Arms

log = logging.getLogger(__name__)
SERVED_FILE = "served.json"


def served_path(settings: Settings) -> Path:
    return settings.paths.home / "scores" / SERVED_FILE


def served(settings: Settings) -> dict | None:
    """The record of the lists served now (None before the first publish)."""
    path = served_path(settings)
    if not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is damaged ({exc}); run `recsys score --full` and publish again") from exc


def record_served(settings: Settings, night: dict, recommendations: str, rescored: int, users: int) -> dict:
    """Record the lists just published as the ones served now; the record before becomes
    ``previous``."""
    before = served(settings)
    if before is not None:
        before.pop("previous", None)
    record = {
        "recommendations": str(recommendations),
        "model_version": night["model_version"],
        "arms": night.get("arms"),
        "blocked": night.get("blocked"),
        "release_id": night["release_id"],
        "events_seq": night["events_seq"],
        "night_id": night.get("night_id", ""),
        "data_version": night["snapshot_version"],
        "mode": night["mode"],
        "rescored": int(rescored),
        "users": int(users),
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "previous": before,
    }
    write_text(json.dumps(record, indent=2) + "\n", served_path(settings))
    return record


def _full_reason(
    now: dict | None, version: str, release: str, raw: Path, full: bool, blocked: list[int] | None
) -> str:
    """Why everyone must be scored tonight ("" when only the changed users need it)."""
    if full:
        return "a full re-score was asked for"
    if now is None:
        return "no lists are served yet"
    if str(now.get("model_version")) != version:
        return f"the model version changed ({now.get('model_version')} -> {version})"
    if now.get("release_id") != release:
        return "the snapshot holds a new release"
    seq = int(now.get("events_seq", -1))
    if seq > eventlog.last_seq(raw) or eventlog.night_id(raw, seq) != now.get("night_id", ""):
        return "the served lists' night is not in the event log"
    if not Path(now.get("recommendations", "")).is_file():
        return "the served lists' file is gone"
    back = sorted(
        set(now.get("blocked") or []) - set(blocked if blocked is not None else now.get("blocked") or [])
    )
    if back:  # the stored lists were scored without them: only a re-score puts them back
        return f"movie(s) {', '.join(map(str, back[:5]))} were unblocked since the lists were scored"
    return ""


def _arms_reason(now: dict, arms: Arms) -> str:
    """Why users change arm tonight ("" when the arms are those of the lists served now)."""
    before = Arms.from_dict(now.get("arms"), champion=str(now["model_version"]))
    if before == arms:
        return ""
    was = f"canary {before.canary} on {before.share:.0%}" if before.canary else "no canary"
    is_ = f"canary {arms.canary} on {arms.share:.0%}" if arms.canary else "no canary"
    return f"; the users whose arm changed ({was} -> {is_})"


def plan(
    settings: Settings,
    model_version: str,
    full: bool = False,
    arms: Arms | None = None,
    new_movies_count: bool = False,
) -> dict:
    """Pin tonight's data and decide who is scored (see the module docstring); ``arms``: the
    versions serving tonight (default: ``model_version`` alone, for everyone).
    ``new_movies_count``: a version serving tonight embeds movies from their features, so a
    movie added since the served lists may belong in anyone's list (the night is full)."""
    arms = arms or Arms(model_version)
    if arms.champion != model_version:
        raise ValueError(f"arms {arms} do not have version {model_version} as champion")
    raw = home.raw_dir(settings)
    prepared = PreparedRef.at(home.prepared_dir(settings))
    activity, base_seq = eventlog.prepared_base(raw, prepared.folder)
    until, release = eventlog.last_seq(raw), eventlog.release_id(raw)
    now = served(settings)
    blocked = _blocked(settings)
    reason = _full_reason(now, model_version, release, raw, full, blocked)
    if not reason and new_movies_count:
        added = len(eventlog.movies_after(raw, int(now["events_seq"])))  # type: ignore[index]
        if added:
            reason = f"{added} movie(s) added since the served lists (a content item tower lists them)"
    moved = "" if reason else _arms_reason(now, arms)  # type: ignore[arg-type]
    return {
        "model_version": model_version,
        "arms": arms.as_dict(),
        "blocked": blocked,
        **prepared.as_dict(),
        "raw_dir": str(raw),
        "snapshot_version": snapshots.data_version(raw),
        "release_id": release,
        "base_seq": base_seq if activity is not None else -1,  # -1: read the release's ratings.csv
        "events_seq": until,
        "night_id": eventlog.night_id(raw, until),
        "mode": "full" if reason else "incremental",
        "reason": reason or f"users changed by nights {now['events_seq'] + 1}..{until}{moved}",  # type: ignore[index]
        "arms_changed": bool(moved),
        "changed_since": -1 if reason else int(now["events_seq"]),  # type: ignore[index]
        "served": None if reason else now["recommendations"],  # type: ignore[index]
    }


def _blocked(settings: Settings) -> list[int] | None:
    """The takedown list tonight's lists leave out (recsys.online.blocklist), pinned for every shard;
    None when the online store does not answer (the readers still leave blocked movies out)."""
    from recsys.errors import StoreError
    from recsys.online import blocklist

    try:
        return sorted(blocklist.blocked(settings))
    except StoreError as exc:
        log.info("planning without the takedown list (%s)", exc)
        return None


def _base(night: dict) -> tuple[Path | None, int]:
    if int(night["base_seq"]) < 0:
        return None, 0
    return Path(night["prepared_dir"]) / "activity.parquet", int(night["base_seq"])


def users(night: dict) -> np.ndarray:
    """Who the night scores, ascending: everyone in the data, or the changed users."""
    raw, until = Path(night["raw_dir"]), int(night["events_seq"])
    if night["mode"] == "incremental":
        changed = eventlog.changed_users(raw, int(night["changed_since"]), until)
        if night.get("arms_changed"):
            changed = np.union1d(changed, _moved_users(night))
        return changed
    activity, since = _base(night)
    if activity is not None:
        base = read_parquet(activity, ["user_id"], eventlog.PREPARE_AGAIN)["user_id"].to_numpy()
    else:
        from recsys.data.prepared import load_ratings

        base = load_ratings(raw / "ratings.csv")["user_id"].to_numpy()
    later = eventlog.ratings_after(raw, since, until=until)["user_id"].to_numpy()
    return np.unique(np.concatenate([base, later]).astype(np.int64))


def _moved_users(night: dict) -> np.ndarray:
    """The served users whose arm, or whose arm's version, differs tonight (ascending)."""
    import pyarrow.parquet as pq

    path = Path(night["served"])
    fix = "run `recsys score --full`"
    try:
        has_arm = "arm" in pq.read_schema(path).names
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} cannot be read ({exc}); {fix}") from exc
    kept = read_parquet(path, ["user_id", "model_version", *(["arm"] if has_arm else [])], fix)
    if not has_arm:  # lists scored before arms: all the champion's
        kept = kept.assign(arm=CHAMPION_ARM)
    arms = Arms.from_dict(night["arms"])
    ids = kept["user_id"].to_numpy(dtype=np.int64)
    arm = arms.assign(ids)
    versions = arms.versions()
    version = np.array([versions[a] for a in arm], dtype=object)
    moved = (kept["arm"].to_numpy(dtype=object) != arm) | (
        kept["model_version"].astype(str).to_numpy() != version
    )
    return np.sort(ids[moved])


def ratings(night: dict, user_ids: np.ndarray | None) -> pd.DataFrame:
    """The pinned data's ratings of ``user_ids`` (None: everyone), ordered by user and time."""
    activity, since = _base(night)
    return eventlog.current_ratings(
        Path(night["raw_dir"]), user_ids, activity, since, int(night["events_seq"])
    )


def check(night: dict) -> dict:
    """``night`` when its prepared data is still in place (DataError when a prepare landed)."""
    PreparedRef.from_dict(night).check()
    return night
