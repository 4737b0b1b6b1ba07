"""Start, stop, judge and inspect the canary: the registry's alias and tags (recsys.tracking.canary)
and the online store's arms record (recsys.online.publication) together, for the CLI, the retrain
gate and the nightly DAG.

Starting takes effect at the next night: it scores the slice's users with the canary's version
(and only them, in an incremental night). Stopping takes effect at once: the canary's stored lists
leave the arms record, so every reader answers its users as users without a list (scored on the
spot by the champion, or the popular list) until the next night re-scores them with the champion.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import redis

from recsys.config import Settings
from recsys.errors import InvalidRequestError, StoreError
from recsys.online import publication
from recsys.ops import redis_server
from recsys.ops.registry import TWO_TOWER, Registry
from recsys.runtime.arms import Arms
from recsys.tracking import canary, promotion

log = logging.getLogger(__name__)


def start(
    settings: Settings, version: Any, share: Any, salt: str | None = None, by: str | None = None
) -> dict:
    """Make ``version`` the canary for ``share`` of the users from the next night on (see
    recsys.tracking.canary.start for the errors); returns :func:`status`."""
    redis_server.require(settings)  # before the registry changes: the store must hear of it too
    arms = canary.start(Registry.open(settings, TWO_TOWER), version, share, salt, by)
    assert arms.canary is not None
    conn = redis_server.client(settings.redis_connection)
    try:
        publication.allow_canary(conn, arms.canary)
    finally:
        conn.close()
    return status(settings)


def stop(settings: Settings, reason: str = "", by: str | None = None) -> str | None:
    """End the canary in the registry and withdraw its lists from every answer now; the version it
    was (None: there was no canary)."""
    redis_server.require(settings)  # before the registry changes: the lists must leave at once
    version = canary.stop(Registry.open(settings, TWO_TOWER), reason, by)
    if version is not None:
        conn = redis_server.client(settings.redis_connection)
        try:
            publication.withdraw_canary(conn, version)
        finally:
            conn.close()
    return version


def from_params(settings: Settings, version: int | None, share: float | None, stop_it: bool, by: str) -> str:
    """What the nightly run's Params ask (start ``version`` on ``share``, or stop the canary),
    done before the night is planned; returns what was done ("" when nothing was asked).
    InvalidRequestError for a request that is both, or a version without a share."""
    if stop_it and version is not None:
        raise InvalidRequestError("Params canary_stop and canary_version ask for opposite things: set one")
    if stop_it:
        stopped = stop(settings, "Param canary_stop of the nightly run", by)
        return f"canary version {stopped} stopped" if stopped else "no canary was running"
    if version is None:
        if share is not None:
            raise InvalidRequestError("Param canary_share needs canary_version (the version to serve)")
        return ""
    if share is None:
        raise InvalidRequestError("Param canary_version needs canary_share (the share of users, in (0, 0.5])")
    state = start(settings, version, share, by=by)
    return f"canary version {state['canary']['version']} on {state['canary']['share']:.1%} of users"


def arms(settings: Settings) -> Arms:
    """Tonight's arms as the registry holds them (the champion, and the canary if one runs)."""
    return canary.arms(Registry.open(settings, TWO_TOWER))


def status(settings: Settings) -> dict:
    """The registry's champion and canary, and what the online store serves (its arms record;
    None before the first publish with arms, or while Redis does not answer)."""
    out = canary.status(Registry.open(settings, TWO_TOWER))
    try:
        redis_server.require(settings)
        conn = redis_server.client(settings.redis_connection)
        try:
            out["served"] = publication.served_arms(conn)
        finally:
            conn.close()
    except StoreError as exc:
        out["served"] = None
        out["store"] = str(exc)
    return out


def replace(settings: Settings, version: str, by: str) -> dict:
    """The gate in ``promotion.mode=canary``: ``version`` becomes the canary for
    ``promotion.canary_share`` of the users, ending the canary it replaces (recorded as such)."""
    running = Registry.open(settings, TWO_TOWER).alias_version("canary")
    if running is not None and running != str(version):
        stop(settings, f"replaced by version {version}", by)
        _note(settings, running, "replaced", f"replaced by version {version}", by)
    return start(settings, version, settings.promotion.canary_share, by=by)


def judge(settings: Settings, by: str) -> dict:
    """The nightly decision on the canary (recsys.tracking.promotion) from its latest evidence, and
    what it did: promoted it to champion, rolled it back (its lists leave every answer at once), or
    left it serving. In ``promotion.mode=offline`` a canary is judged by people only."""
    from recsys.pipelines import evaluate, evidence

    models = Registry.open(settings, TWO_TOWER)
    now = canary.arms(models)
    if now.canary is None:
        return {"decided": False, "action": "none", "reason": "no canary is running"}
    rows = evidence.canary_nights(evaluate.history(settings), now)
    latest = evaluate.json_safe(rows.iloc[-1].to_dict()) if len(rows) else None
    decision = promotion.decide(latest, settings.promotion)
    if settings.promotion.mode != "canary":
        reason = (
            f"{decision.reason}; promotion.mode is offline: `recsys promote` or `recsys canary stop` decides"
        )
        return {"decided": False, "action": "continue", "version": now.canary, "reason": reason}
    if decision.action == "promote":
        models.promote(now.canary, reason=f"canary promoted on online evidence: {decision.reason}")
    elif decision.action == "roll_back":
        stop(settings, f"rolled back on online evidence: {decision.reason}", by)
    if decision.action != "continue":
        _note(settings, now.canary, decision.action, decision.reason, by)
    return {"decided": decision.action != "continue", "action": decision.action, "version": now.canary,
            "champion": now.champion, "reason": decision.reason, "evidence": latest}  # fmt: skip


def promote_by_hand(settings: Settings, version: str, by: str) -> dict:
    """`recsys promote`: ``version`` becomes the champion whatever the canary's evidence says; a
    running canary promoted this way, or left beside a new champion, is recorded as overridden."""
    models = Registry.open(settings, TWO_TOWER)
    running = models.alias_version("canary")
    outcome = models.promote(str(version))
    out = {"version": outcome.version, "previous": outcome.previous, "canary": running, "override": ""}
    if running is not None:
        what = "promoted by hand" if running == str(version) else f"champion set to {version} by hand"
        out["override"] = f"overrides the online decision on canary version {running} ({what})"
        _note(settings, running, "overridden", what, by)
    return out


def _note(settings: Settings, version: str, action: str, reason: str, by: str) -> None:
    """A canary decision on its version (tags) and in the online store (for `recsys status`)."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    tags = {"canary_decision": action, "canary_decision_reason": reason[:500], "canary_decided_at": at}
    Registry.open(settings, TWO_TOWER).tag_version(version, {**tags, "canary_decided_by": by})
    try:
        conn = redis_server.client(settings.redis_connection)
        try:
            publication.note_decision(
                conn, {"version": version, "action": action, "reason": reason, "at": at, "by": by}
            )
        finally:
            conn.close()
    except (redis.RedisError, StoreError) as exc:  # the registry holds the decision; status mirrors it
        log.warning("canary decision not mirrored in the online store: %s", exc)
