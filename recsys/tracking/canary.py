"""The canary in the model registry: alias ``canary`` on the version served to a slice of users,
with the slice (share and salt, recsys.runtime.arms) and who started or stopped it, when and why,
as tags on that version.

Tags: ``canary_share``, ``canary_salt``, ``canary_started_at``, ``canary_started_by``; on stop,
``canary_stopped_at``, ``canary_stopped_by`` and ``canary_stop_reason``. The tags stay on the version
after it stops: the registry keeps the history of every canary.
"""

from __future__ import annotations

import getpass
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from recsys.errors import InvalidRequestError, ModelNotFoundError
from recsys.ops.registry import CANARY, Registry
from recsys.runtime.arms import Arms, check_share

log = logging.getLogger(__name__)
SHARE, SALT = "canary_share", "canary_salt"
STARTED_AT, STARTED_BY = "canary_started_at", "canary_started_by"
STOPPED_AT, STOPPED_BY, STOP_REASON = "canary_stopped_at", "canary_stopped_by", "canary_stop_reason"
MAX_TEXT = 200  # characters of a salt, who or why kept


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _text(name: str, value: str) -> str:
    if len(value) > MAX_TEXT:
        raise InvalidRequestError(f"{name} must be at most {MAX_TEXT} characters, got {len(value)}")
    return value


def arms(registry: Registry) -> Arms:
    """Tonight's arms: the champion, and the canary when a version holds alias ``canary``.

    Raises ModelNotFoundError when there is no champion."""
    champion = str(registry.resolve("champion").version)
    version = registry.alias_version(CANARY)
    if version is None or version == champion:
        return Arms(champion)
    tags = registry.resolve(version).tags
    return Arms(champion, version, float(tags[SHARE]), tags[SALT])


def start(
    registry: Registry, version: Any, share: Any, salt: str | None = None, by: str | None = None
) -> Arms:
    """Serve ``version`` to ``share`` of the users from the next night on; returns the arms.

    The same version again changes its share (a new salt draws a new slice). Raises
    InvalidRequestError for a share outside (0, 0.5], the champion's own version, or another
    version while a canary runs (stop it first); ModelNotFoundError for a version that does not
    exist."""
    try:
        fraction = check_share(share)
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from None
    mv = registry.resolve(str(version))
    version = str(mv.version)
    champion = registry.champion_version()
    if champion is None:
        raise ModelNotFoundError(
            f"{registry.model_name} has no champion: a canary serves beside one (`recsys promote`)"
        )
    if champion == version:
        raise InvalidRequestError(f"version {version} is the champion: a canary must be another version")
    running = registry.alias_version(CANARY)
    if running is not None and running != version:
        raise InvalidRequestError(
            f"version {running} is the canary already: `recsys canary stop` it before starting another"
        )
    salt = _text(
        "salt", salt if salt else (mv.tags.get(SALT) if running == version else None) or secrets.token_hex(4)
    )
    who = _text("by", by or getpass.getuser())
    registry.tag_version(version, {SHARE: repr(fraction), SALT: salt, STARTED_AT: _now(), STARTED_BY: who})
    registry.client.set_registered_model_alias(registry.model_name, CANARY, version)
    log.warning("%s version %s is the canary for %.1f%% of users (salt %s), started by %s",
                registry.model_name, version, 100 * fraction, salt, who)  # fmt: skip
    return arms(registry)


def stop(registry: Registry, reason: str = "", by: str | None = None) -> str | None:
    """End the canary: drop alias ``canary`` and record who, when and why on its version; returns
    the version that was the canary (None: there was none)."""
    version = registry.alias_version(CANARY)
    if version is None:
        return None
    who = _text("by", by or getpass.getuser())
    registry.tag_version(
        version, {STOPPED_AT: _now(), STOPPED_BY: who, STOP_REASON: _text("reason", reason or "stopped")}
    )
    registry.drop_alias(CANARY)
    log.warning(
        "%s version %s is no longer the canary (%s, by %s)", registry.model_name, version, reason, who
    )
    return version


def status(registry: Registry) -> dict[str, Any]:
    """The champion, the canary (version, share, salt, started at and by) or None, and the last
    stopped canary's record."""
    try:
        now = arms(registry)
    except ModelNotFoundError:
        return {"champion": None, "canary": None}
    out: dict[str, Any] = {"champion": now.champion, "canary": None}
    if now.canary is not None:
        tags = registry.resolve(now.canary).tags
        out["canary"] = {
            "version": now.canary,
            "share": now.share,
            "salt": now.salt,
            "started_at": tags.get(STARTED_AT),
            "started_by": tags.get(STARTED_BY),
        }
    return out
