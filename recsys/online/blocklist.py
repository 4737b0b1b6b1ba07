"""The takedown list: movies withdrawn from every answer at once, kept in the online store's Redis
beside the lists (hash ``recsys:blocked_movies``, :data:`recsys.online.layout.BLOCKLIST_KEY`: movie
id -> JSON ``{"reason", "by", "at"}``).

The readers (recsys.online.reader: `recsys lookup`, HTTP, the Python API) read the list in the same
round trip as the lists and drop blocked movies before they cut a list to k, so a block holds from
the next lookup on, with no re-publish. Every block and unblock is logged with who and when.
"""

from __future__ import annotations

import getpass
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import redis

from recsys import checks
from recsys.config import Settings
from recsys.errors import InvalidRequestError, StoreError
from recsys.online.layout import BLOCKLIST_KEY
from recsys.ops import redis_server

log = logging.getLogger(__name__)
MAX_REASON = 500  # characters of a reason kept
MAX_WHO = 100  # characters of who blocked it


@contextmanager
def _store(settings: Settings) -> Iterator[redis.Redis]:
    conn = redis_server.client(settings.redis_connection)
    try:
        yield conn
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise redis_server.unreachable(settings, exc) from exc
    except redis.RedisError as exc:
        raise StoreError(f"Redis at {settings.redis_address} failed the blocklist command: {exc}") from exc
    finally:
        conn.close()


def block(movie_id: Any, settings: Settings, reason: str = "", by: str | None = None) -> dict:
    """Withdraw ``movie_id`` from every answer now; returns the entry (movie_id, reason, by, at).

    Blocking a blocked movie again replaces its reason, who and when. Raises InvalidRequestError
    for a bad id or an over-long reason, StoreError when Redis is unreachable.
    """
    movie = checks.movie_id(movie_id)
    if len(reason) > MAX_REASON:
        raise InvalidRequestError(f"reason must be at most {MAX_REASON} characters, got {len(reason)}")
    if by is not None and len(by) > MAX_WHO:
        raise InvalidRequestError(f"by must be at most {MAX_WHO} characters, got {len(by)}")
    entry = {
        "reason": reason,
        "by": by or getpass.getuser(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with _store(settings) as conn:
        conn.hset(BLOCKLIST_KEY, str(movie), json.dumps(entry))
    log.warning(
        "movie %d blocked by %s at %s: %s", movie, entry["by"], entry["at"], reason or "no reason given"
    )
    return {"movie_id": movie, **entry}


def unblock(movie_id: Any, settings: Settings, by: str | None = None) -> bool:
    """Put ``movie_id`` back into the answers; False when it was not blocked. Errors as :func:`block`."""
    movie = checks.movie_id(movie_id)
    with _store(settings) as conn:
        removed = bool(conn.hdel(BLOCKLIST_KEY, str(movie)))
    if removed:
        log.warning("movie %d unblocked by %s", movie, by or getpass.getuser())
    return removed


def blocked(settings: Settings) -> dict[int, dict]:
    """Every blocked movie id -> {reason, by, at}, by id. Raises StoreError when Redis is unreachable."""
    with _store(settings) as conn:
        raw = conn.hgetall(BLOCKLIST_KEY)
    return {int(movie): json.loads(entry) for movie, entry in sorted(raw.items(), key=lambda kv: int(kv[0]))}


def blocked_for_scoring(settings: Settings) -> set[int]:
    """The blocked movie ids for a scoring run to leave out of its lists; none, with a log line,
    when the store does not answer. Safe: the readers leave blocked movies out of every answer
    anyway, so a list scored without the list only holds fewer than K movies once served."""
    try:
        return set(blocked(settings))
    except StoreError as exc:
        log.info("scoring without the takedown list (%s); the readers still leave blocked movies out", exc)
        return set()
