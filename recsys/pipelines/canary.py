"""Start, stop and inspect the canary: the registry's alias and tags (recsys.tracking.canary) and the
online store's arms record (recsys.online.publication) together, for the CLI and the nightly DAG.

Starting takes effect at the next night: it scores the slice's users with the canary's version
(and only them, in an incremental night). Stopping takes effect at once: the canary's stored lists
leave the arms record, so every reader answers its users as users without a list (scored on the
spot by the champion, or the popular list) until the next night re-scores them with the champion.
"""

from __future__ import annotations

from typing import Any

from recsys.config import Settings
from recsys.errors import InvalidRequestError, StoreError
from recsys.online import publication
from recsys.ops import redis_server
from recsys.ops.registry import TWO_TOWER, Registry
from recsys.runtime.arms import Arms
from recsys.tracking import canary


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
