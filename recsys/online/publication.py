"""What the online store serves, and whether a publish is under way: the publication record.

Feast's Redis layout has one hash per user and no notion of a release, so a publish cannot switch
every user at once. What it guarantees instead:

- per reader, all or nothing: each user's list (ids, scores, versions, timestamp) is one HSET, so a
  reader sees the complete list of version N-1 or of version N, never a mix;
- an interrupted publish says so: the record below holds ``state`` (``publishing`` until the last
  write, then ``complete``), the target versions, how many rows are written, and the versions that
  were fully served before. ``recsys status`` reads it, with the publish lock's holder;
- a re-run converges: every write is idempotent (event timestamps come from the scored file), so
  publishing the same file again after a kill, at any point, ends in exactly the state an
  uninterrupted publish leaves;
- users missing from the new scoring are removed (``store.stale_users=remove``, the default) or
  kept (``keep``): the set of users of the last complete publication is kept beside the record.

Keys (plain names beside Feast's binary entity keys): ``recsys:publication`` (hash),
``recsys:published_users`` (set of user ids) and ``recsys:arms`` (hash): the arms of the last publish
(champion, canary, share, salt; recsys.runtime.arms) and ``allowed``, the model versions whose
stored lists the readers may serve. A publish widens ``allowed`` to the old and the new versions
while it writes, then narrows it to the new ones; :func:`withdraw_canary` narrows it at once, so a
stopped canary's lists leave every answer with no re-publish (the readers fall back as for a user
without a list).

The similar-movie lists (Feast view ``movie_similar``) have no record of their own: each movie's
hash holds the version, data version and timestamp of its list, and :func:`similar_status` reads
them back (one SCAN of the movie keys, one pipelined read).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import redis

from recsys.config import Settings
from recsys.online.layout import ALLOWED_FIELD, ARMS_KEY, allowed_versions
from recsys.ops import locks
from recsys.runtime.arms import Arms

RECORD_KEY = "recsys:publication"
USERS_KEY = "recsys:published_users"
FAULT_ENV = "RECSYS_FAULT_KILL_PUBLISH_AT"  # fault injection (tests): SIGKILL at this fraction


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def begin(
    conn: redis.Redis, model_version: str, data_version: str, total_rows: int, arms: Arms | None = None
) -> None:
    """Mark a publish of (model_version, data_version) as under way, ``total_rows`` rows to write;
    with ``arms``, the readers may serve their versions from now on as well as the old ones."""
    if arms is not None:
        allowed, withdrawn = conn.hmget(ARMS_KEY, [ALLOWED_FIELD, b"withdrawn"])
        new = set(arms.versions().values()) - {(withdrawn or b"").decode()} | {arms.champion}
        conn.hset(ARMS_KEY, ALLOWED_FIELD, ",".join(sorted((allowed_versions(allowed) or set()) | new)))
    conn.hset(
        RECORD_KEY,
        mapping={
            "state": "publishing",
            "target_model_version": model_version,
            "target_data_version": data_version,
            "started_at": _now(),
            "written_rows": 0,
            "total_rows": total_rows,
        },
    )


def progress(conn: redis.Redis, written_rows: int, total_rows: int) -> None:
    """Record how many rows are written (and honour the fault-injection point, if one is set)."""
    conn.hset(RECORD_KEY, "written_rows", written_rows)
    at = os.environ.get(FAULT_ENV)
    if at and total_rows and written_rows / total_rows >= float(at):
        os.kill(os.getpid(), signal.SIGKILL)  # as an OOM kill or a lost machine would


def finish(
    conn: redis.Redis, user_ids: Iterable[int], user_key: Any, remove_stale: bool, arms: Arms | None = None
) -> int:
    """Close a publish: drop (or keep) users of the last publication missing from this one,
    record this publication's users and versions (and ``arms``, the only ones served from now on).
    Returns how many stale users were removed.

    ``user_key(user_id) -> bytes`` is the Feast entity key of a user (one hash for all its views).
    """
    ids = [int(u) for u in user_ids]
    staging = f"{USERS_KEY}:next"
    conn.delete(staging)
    for start in range(0, len(ids), 10_000):
        conn.sadd(staging, *ids[start : start + 10_000])
    stale = [int(u) for u in conn.sdiff(USERS_KEY, staging)] if conn.exists(USERS_KEY) else []
    if stale and remove_stale:
        for start in range(0, len(stale), 10_000):
            conn.delete(*[user_key(u) for u in stale[start : start + 10_000]])
    record = conn.hgetall(RECORD_KEY)
    withdrawn = conn.hget(ARMS_KEY, "withdrawn")
    with conn.pipeline(transaction=True) as pipe:  # the set and the record move together
        if ids:
            pipe.rename(staging, USERS_KEY)
        else:
            pipe.delete(USERS_KEY, staging)
        pipe.hset(
            RECORD_KEY,
            mapping={
                "state": "complete",
                "model_version": record.get(b"target_model_version", b""),
                "data_version": record.get(b"target_data_version", b""),
                "published_at": _now(),
                "users": len(ids),
                "stale_users": len(stale),
                "stale_users_removed": len(stale) if remove_stale else 0,
            },
        )
        pipe.hdel(RECORD_KEY, "target_model_version", "target_data_version")
        if arms is not None:
            pipe.delete(ARMS_KEY)
            pipe.hset(ARMS_KEY, mapping=_arms_fields(arms, (withdrawn or b"").decode()))
        pipe.execute()
    return len(stale) if remove_stale else 0


def _arms_fields(arms: Arms, withdrawn: str) -> dict[str, str]:
    """The arms record of a finished publish; a canary withdrawn while it ran stays withdrawn."""
    if arms.canary is not None and arms.canary == withdrawn:
        return {"champion": arms.champion, ALLOWED_FIELD.decode(): arms.champion, "withdrawn": withdrawn}
    fields = {"champion": arms.champion, ALLOWED_FIELD.decode(): ",".join(sorted(arms.versions().values()))}
    if arms.canary is not None:
        fields.update(canary=arms.canary, share=repr(arms.share), salt=arms.salt)
    return fields


def served_arms(conn: redis.Redis) -> dict[str, Any] | None:
    """The arms record (module docstring) as text fields, ``allowed`` as a sorted list; None before
    the first publish that recorded arms."""
    raw = {k.decode(): v.decode() for k, v in conn.hgetall(ARMS_KEY).items()}
    if not raw:
        return None
    raw["allowed"] = sorted(allowed_versions(raw.get("allowed", "").encode()) or set())
    return raw


def serves_a_canary(conn: redis.Redis) -> bool:
    """Whether the last publish served a canary's lists (the nightly judge has evidence to read only
    then): one Redis read, so a night without a canary skips the judge without loading MLflow."""
    return bool(conn.hget(ARMS_KEY, "canary"))


def withdraw_canary(conn: redis.Redis, version: str) -> None:
    """Stop serving canary ``version``'s stored lists at once: it leaves ``allowed`` (its users get
    what a user without a list gets until the next night re-scores them), and stays out when a
    publish under way finishes with it (field ``withdrawn``, cleared by :func:`allow_canary`)."""
    with conn.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(ARMS_KEY)
                record = {k.decode(): v.decode() for k, v in pipe.hgetall(ARMS_KEY).items()}
                pipe.multi()
                pipe.hset(ARMS_KEY, "withdrawn", version)
                if record:
                    allowed = allowed_versions(record.get("allowed", "").encode()) or set()
                    if version != record.get("champion"):
                        allowed.discard(version)
                    pipe.hset(ARMS_KEY, ALLOWED_FIELD, ",".join(sorted(allowed)))
                if record.get("canary") == version:
                    pipe.hdel(ARMS_KEY, "canary", "share", "salt")
                pipe.execute()
                return
            except redis.WatchError:
                continue


def allow_canary(conn: redis.Redis, version: str) -> None:
    """A canary (re)started: a publish may serve ``version`` again."""
    if conn.hget(ARMS_KEY, "withdrawn") == version.encode():
        conn.hdel(ARMS_KEY, "withdrawn")


DECISIONS_KEY = "recsys:canary_decisions"  # list of JSON records, newest first
KEPT_DECISIONS = 20


def note_decision(conn: redis.Redis, decision: dict[str, Any]) -> None:
    """Keep a canary decision (version, action, reason, when, by) for `recsys status`."""
    with conn.pipeline(transaction=True) as pipe:
        pipe.lpush(DECISIONS_KEY, json.dumps(decision))
        pipe.ltrim(DECISIONS_KEY, 0, KEPT_DECISIONS - 1)
        pipe.execute()


def decisions(conn: redis.Redis, n: int = 1) -> list[dict[str, Any]]:
    """The last ``n`` canary decisions, newest first."""
    return [json.loads(raw) for raw in conn.lrange(DECISIONS_KEY, 0, n - 1)]


NIGHT_FIELDS = ("mode", "rescored", "oldest_scored_at", "new_movies", "lists_with_new")


def note_night(
    conn: redis.Redis,
    mode: str,
    rescored: int,
    oldest_scored_at: str,
    new_movies: int = 0,
    lists_with_new: int = 0,
) -> None:
    """Beside the record of a complete publish: whether the night scored everyone (``full``) or the
    changed users (``incremental``), how many users it re-scored, when the oldest list now served
    was scored, how many movies of the served catalogue have no training positive (new since
    training), and how many served lists hold at least one of them."""
    conn.hset(
        RECORD_KEY,
        mapping={
            "mode": mode,
            "rescored": rescored,
            "oldest_scored_at": oldest_scored_at,
            "new_movies": new_movies,
            "lists_with_new": lists_with_new,
        },
    )


def status(settings: Settings, conn: redis.Redis) -> dict[str, Any]:
    """What is served and whether a publish is under way (``publish``: idle, under way, or
    interrupted: started, not finished, and nobody holds the publish lock)."""
    record = {k.decode(): v.decode() for k, v in conn.hgetall(RECORD_KEY).items()}
    served = {key: record.get(key) for key in ("model_version", "data_version", "published_at")}
    served["users"] = int(conn.scard(USERS_KEY))
    served.update({key: record.get(key) for key in NIGHT_FIELDS})
    for key in ("new_movies", "lists_with_new"):
        value = served[key]
        served[key] = int(value) if value is not None else None
    out: dict[str, Any] = {"served": served, "publish": "idle"}
    if record.get("state") == "publishing":
        holder = locks.held_by(settings, "publish")
        written, total = int(record.get("written_rows", 0)), int(record.get("total_rows", 0))
        out["publish"] = "under way" if holder else "interrupted"
        out["target"] = {
            "model_version": record.get("target_model_version"),
            "data_version": record.get("target_data_version"),
            "started_at": record.get("started_at"),
            "written_rows": written,
            "total_rows": total,
            "percent": round(100 * written / total, 1) if total else 0.0,
        }
        if holder:
            out["target"]["holder"] = holder
    return out


def similar_status(conn: redis.Redis) -> dict[str, Any]:
    """What the similar-movie lists in the store are: ``movies`` with a list, of which ``content``
    come from the movie's features alone (no or too few ratings), the movie_similar
    ``model_versions`` and ``data_versions`` they come from (with how many movies each), and the
    newest list's ``scored_at`` (its event timestamp, UTC; None without lists)."""
    from recsys.online import layout
    from recsys.online.layout import MOVIE_KEY, SIMILAR_VIEW, decode_value, entity_key

    prefix = entity_key(MOVIE_KEY, 0)[: -8 - len(b"recsys")]  # the key up to the id
    names = ("movie_ids", "model_version", "data_version", "source")
    fields = [layout.field_key(SIMILAR_VIEW, f) for f in names]
    fields.append(f"_ts:{SIMILAR_VIEW}".encode())
    keys = list(conn.scan_iter(match=prefix + b"*", count=5000))
    with conn.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hmget(key, fields)
        replies = pipe.execute() if keys else []
    models: dict[str, int] = {}
    datas: dict[str, int] = {}
    newest = content = 0
    for movie_ids, model, data, source, stamp in replies:
        if movie_ids is None:
            continue  # a catalogue movie (title only) without a list
        content += decode_value(source) == "content"
        model = decode_value(model) or ""
        models[model] = models.get(model, 0) + 1
        datas[decode_value(data) or ""] = datas.get(decode_value(data) or "", 0) + 1
        newest = max(newest, _timestamp_seconds(stamp))
    scored = datetime.fromtimestamp(newest, UTC).isoformat(timespec="seconds") if newest else None
    return {
        "movies": sum(models.values()),
        "content": content,
        "model_versions": dict(sorted(models.items())),
        "data_versions": dict(sorted(datas.items())),
        "scored_at": scored,
    }


def _timestamp_seconds(buf: bytes | None) -> int:
    """The seconds of a serialized google.protobuf.Timestamp (field 1, a varint); 0 if absent."""
    if not buf or buf[0] != 0x08:
        return 0
    value = shift = 0
    for byte in buf[1:]:
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    return value
