"""Fast lookup: a user's top-K list with titles, or history, read straight from Feast's Redis layout.

``import feast`` costs 7-8 s, so this module never imports it. It reads the keys Feast's Redis
online store writes (feast/infra/online_stores/redis.py, entity_key_serialization_version 3):

- key: serialized EntityKey + project name, for one Int64 join key
  ``<I 1> <I STRING=2> <I len(name)> name <I INT64=4> <I 8> <q value>`` then ``b"recsys"``;
- hash field per feature: murmur3_32(``"<view>:<feature>"``) as 4 little-endian bytes;
- hash value: a serialized ``feast.types.Value`` protobuf.

Only three Value cases occur here, so a dozen lines of protobuf wire decoding replace the
generated classes: ``string_val`` (field 2), ``int64_list_val`` (14) and ``float_list_val`` (16),
each list being a message whose field 1 holds the values (packed, or repeated one by one).
Feast writes an empty list as the list field with length 0 (bytes ``72 00`` for int64), which decodes
to ``[]``; a field Redis does not hold decodes to None.
The integration tests write through Feast and read through this module, pinning the layout.

Every list read here leaves out the movies on the takedown list (recsys.online.blocklist), read
in the same round trip, before it is cut to k. A user's stored list is served only when its model
version is one the arms record allows (recsys.online.publication: the champion's and the canary's);
a list of any other version, such as a canary stopped since the night, counts as no list.

Ids and ``k`` are checked once per door: the public functions (the Python API) check them; the
``read_*`` functions are for the CLI and HTTP doors, which checked them already (recsys.checks).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import redis

from recsys import checks
from recsys.config import Settings, load_settings
from recsys.errors import InvalidRequestError, StoreError, UnknownUserError
from recsys.online.layout import (
    ALLOWED_FIELD,
    ARMS_KEY,
    BLOCKLIST_KEY,
    HISTORY_VIEW,
    MOVIE_KEY,
    MOVIE_VIEW,
    PROJECT,
    USER_KEY,
    USER_VIEW,
    allowed_versions,
    blocked_ids,
    decode_value,
    entity_key,
    field_key,
)
from recsys.ops import redis_server

log = logging.getLogger(__name__)

Triple = tuple[int, float, str]


USER_FIELDS = [field_key(USER_VIEW, f) for f in ("item_ids", "scores", "model_version", "arm")]
BECAUSE_FIELD = field_key(USER_VIEW, "because_ids")


class Served(NamedTuple):
    """One user's stored list as served: the first k movies (blocked ones left out), their scores,
    the arm and model version that scored it ("" for a list stored before arms), and when asked for,
    the reason of each movie (recsys.runtime.explain: a movie id, 0 for none or a blocked one; []
    when the list has no reasons or they were not read)."""

    items: list[int]
    scores: list[float]
    arm: str
    model_version: str
    because: list[int]


TITLE_FIELD = field_key(MOVIE_VIEW, "title")
HISTORY_FIELD = field_key(HISTORY_VIEW, "movie_ids")


def _check_ids(user_ids: Iterable[Any]) -> list[int]:
    """The ids as ints; InvalidRequestError naming the first that is not an id (recsys.checks)."""
    return [checks.user_id(u) for u in user_ids]


def _check(user_ids: Iterable[Any], k: Any) -> list[int]:
    checks.list_length(k)
    return _check_ids(user_ids)


def _check_movies(movie_ids: Iterable[Any], k: Any) -> list[int]:
    checks.list_length(k)
    return [checks.movie_id(m) for m in movie_ids]


_CLIENTS: dict[str, redis.Redis] = {}  # this process's clients, one per connection string


def _client(connection_string: str) -> redis.Redis:
    """One pooled client per connection string, built on first use and reused by every later
    lookup of this process (saves the TCP handshake; redis-py's pool is thread-safe)."""
    conn = _CLIENTS.get(connection_string)
    if conn is None:
        conn = _CLIENTS[connection_string] = redis_server.client(connection_string)
    return conn


@contextmanager
def _store_errors(settings: Settings) -> Iterator[None]:
    """Turn redis-py failures inside the block into StoreError (unreachable or failed command)."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise redis_server.unreachable(settings, exc) from exc
    except redis.RedisError as exc:
        raise StoreError(f"Redis at {settings.redis_address} failed the lookup: {exc}") from exc


def _hmget_all(conn: redis.Redis, commands: list[tuple[bytes, list[bytes]]]) -> list[list[Any]]:
    """One HMGET reply per (key, fields), in order, from one pipelined round trip."""
    with conn.pipeline(transaction=False) as pipe:
        for key, fields in commands:
            pipe.hmget(key, fields)  # type: ignore[arg-type]  # redis-py accepts bytes keys
        return pipe.execute()


def _hmget_unblocked(
    conn: redis.Redis, commands: list[tuple[bytes, list[bytes]]]
) -> tuple[list[list[Any]], set[int], set[str] | None]:
    """One HMGET reply per (key, fields), in order, the blocked movies (recsys.online.blocklist)
    and the model versions whose lists may be served (None: any), from one pipelined round trip."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.hkeys(BLOCKLIST_KEY)
        pipe.hget(ARMS_KEY, ALLOWED_FIELD)
        for key, fields in commands:
            pipe.hmget(key, fields)  # type: ignore[arg-type]  # redis-py accepts bytes keys
        blocked, allowed, *replies = pipe.execute()
    return replies, blocked_ids(blocked), allowed_versions(allowed)


def _first_unblocked(
    items: bytes, scores: bytes, k: int, blocked: set[int], because: bytes | None = None
) -> tuple[list[int], list[float], list[int]]:
    """A stored list's first ``k`` movies that are not blocked, with their scores and reasons: a
    blocked movie leaves the answer at once, and the next one moves up (at most k + len(blocked)
    decoded); a blocked reason reads as none (0). Reasons not parallel to the list read as []."""
    limit = k + len(blocked)
    movies, values = decode_value(items, limit), decode_value(scores, limit)
    why = decode_value(because, limit) if because is not None else None
    if not why or len(why) != len(movies):
        why = None
    kept = [i for i, m in enumerate(movies) if m not in blocked][:k]
    reasons = [] if why is None else [0 if why[i] in blocked else why[i] for i in kept]
    return [movies[i] for i in kept], [values[i] for i in kept], reasons


def _titles(conn: redis.Redis, movie_ids: set[int]) -> dict[int, str]:
    """Titles of ``movie_ids`` in one pipelined round trip ("" and a warning for a missing one)."""
    ordered = sorted(movie_ids)
    replies = _hmget_all(conn, [(entity_key(MOVIE_KEY, m), [TITLE_FIELD]) for m in ordered])
    titles = {m: decode_value(reply[0]) for m, reply in zip(ordered, replies)}
    missing = [m for m, title in titles.items() if title is None]
    if missing:
        log.warning(
            "no title in the online store for %d movie(s), e.g. %s; publish the catalogue",
            len(missing),
            missing[:5],
        )
    return {m: title or "" for m, title in titles.items()}


def stored_lists(
    user_ids: Iterable[int], k: int = checks.MAX_K, settings: Settings | None = None
) -> dict[int, tuple[list[int], list[float]] | None]:
    """Each user's stored (item_ids, scores), the first ``k`` of each, best first; None for a user
    without a stored list. One pipelined round trip for all users.

    Raises InvalidRequestError for a non-positive or non-integer id or k outside 1..MAX_K,
    StoreError when Redis is unreachable.
    """
    return read_lists(_check(user_ids, k), k, settings or load_settings())


def read_lists(ids: list[int], k: int, settings: Settings) -> dict[int, tuple[list[int], list[float]] | None]:
    """:func:`stored_lists` for ids and ``k`` a door has already checked (recsys.checks)."""
    served = read_served(ids, k, settings)[0]
    return {u: None if got is None else (got.items, got.scores) for u, got in served.items()}


def read_served(
    ids: list[int], k: int, settings: Settings, explain: bool = False
) -> tuple[dict[int, Served | None], set[int]]:
    """Each user's stored list with its arm and model version (None: no list, or one of a version
    the arms record does not allow), with ``explain`` its reasons too, and the blocked movies left
    out (the HTTP model leaves them out of the lists it computes for users without a stored one);
    one round trip, ids and ``k`` checked."""
    conn = _client(settings.redis_connection)
    fields = [*USER_FIELDS, BECAUSE_FIELD] if explain else USER_FIELDS
    with _store_errors(settings):
        replies, blocked, allowed = _hmget_unblocked(conn, [(entity_key(USER_KEY, u), fields) for u in ids])
    lists: dict[int, Served | None] = {}
    for user_id, (items, scores, version, arm, *why) in zip(ids, replies):
        version = decode_value(version) or ""
        if items is None or (allowed is not None and version not in allowed):
            lists[user_id] = None
            continue
        movies, values, because = _first_unblocked(items, scores, k, blocked, why[0] if why else None)
        lists[user_id] = Served(movies, values, decode_value(arm) or "", version, because)
    return lists, blocked


def titles(movie_ids: Iterable[int], settings: Settings | None = None) -> dict[int, str]:
    """Title of each movie in one round trip ("" and a warning for a movie without a stored title).

    Raises StoreError when Redis is unreachable.
    """
    settings = settings or load_settings()
    conn = _client(settings.redis_connection)
    with _store_errors(settings):
        return _titles(conn, {int(m) for m in movie_ids})


def lookup_many(
    user_ids: Iterable[int], k: int = 10, settings: Settings | None = None
) -> dict[int, list[Triple]]:
    """Top-``k`` [movie_id, score, title] triples, best first, per user (two round trips in all).

    Raises InvalidRequestError for a non-positive or non-integer id, k outside 1..MAX_K or k
    beyond a stored list's length (the model version's K), UnknownUserError naming users without
    a list, StoreError when Redis is unreachable.
    """
    return read_triples(_check(user_ids, k), k, settings or load_settings())


def read_triples(ids: list[int], k: int, settings: Settings) -> dict[int, list[Triple]]:
    """:func:`lookup_many` for ids and ``k`` a door has already checked (recsys.checks)."""
    return {u: served.triples for u, served in read_served_triples(ids, k, settings).items()}


class ServedTriples(NamedTuple):
    """A user's answer with where it comes from: [movie_id, score, title] triples, best first, the
    arm and model version that scored the list, and when asked for, each movie's reason as
    (movie_id, title), (0, "") for none ([] when the list has none)."""

    triples: list[Triple]
    arm: str
    model_version: str
    because: list[tuple[int, str]]


def read_served_triples(
    ids: list[int], k: int, settings: Settings, explain: bool = False
) -> dict[int, ServedTriples]:
    """Each user's :class:`ServedTriples` (errors as :func:`lookup_many`), ids and ``k`` checked."""
    lists = read_served(ids, k, settings, explain)[0]
    unknown = [str(u) for u, found in lists.items() if found is None]
    if unknown:
        raise UnknownUserError(
            f"user {', '.join(unknown[:5])} has no recommendations in the online store (project "
            f"{PROJECT} at {settings.redis_address}); check the id or run the nightly publish"
        )
    found = {u: got for u, got in lists.items() if got is not None}
    short = [(u, len(got.items)) for u, got in found.items() if len(got.items) < k]
    if short:  # the list's K is the model version's (set at export): asking for more is an error
        user_id, held = short[0]
        raise InvalidRequestError(
            f"k must be at most {held}, the length of the list stored for user {user_id} "
            f"(the model version's K, less any blocked movies), got {k}"
        )
    wanted = {m for got in found.values() for m in (*got.items, *got.because) if m}
    named = {0: "", **titles(wanted, settings)}
    return {
        u: ServedTriples(
            [(m, s, named[m]) for m, s in zip(got.items, got.scores)],
            got.arm,
            got.model_version,
            [(m, named[m]) for m in got.because],
        )
        for u, got in found.items()
    }


def served_lookup(
    user_id: int, k: int = 10, settings: Settings | None = None, explain: bool = False
) -> ServedTriples:
    """One user's top-``k`` triples with the arm and model version behind them, with ``explain``
    the reason of each movie too (errors as :func:`lookup_many`)."""
    ids = _check([user_id], k)
    return read_served_triples(ids, k, settings or load_settings(), explain)[ids[0]]


def lookup(user_id: int, k: int = 10, settings: Settings | None = None) -> list[Triple]:
    """Top-``k`` [movie_id, score, title] triples for one user, best first (errors as lookup_many)."""
    ids = _check([user_id], k)
    return read_triples(ids, k, settings or load_settings())[ids[0]]


def _histories(ids: list[int], settings: Settings) -> dict[int, list[int] | None]:
    """Each user's stored movie_ids (None where Redis holds none) in one pipelined round trip."""
    conn = _client(settings.redis_connection)
    with _store_errors(settings):
        replies = _hmget_all(conn, [(entity_key(USER_KEY, u), [HISTORY_FIELD]) for u in ids])
    return {u: decode_value(reply[0]) for u, reply in zip(ids, replies)}


def history_many(user_ids: Iterable[int], settings: Settings | None = None) -> dict[int, list[int]]:
    """Recent positive movie ids, newest last, per user (one round trip).

    A user without a stored history maps to ``[]``, as does one whose stored history is empty: a
    batch caller wants a row per id. Raises InvalidRequestError for a non-positive or non-integer
    id, StoreError when Redis is unreachable.
    """
    return read_histories(_check_ids(user_ids), settings or load_settings())


def read_histories(ids: list[int], settings: Settings) -> dict[int, list[int]]:
    """:func:`history_many` for ids a door has already checked (recsys.checks)."""
    return {u: movie_ids or [] for u, movie_ids in _histories(ids, settings).items()}


def history(user_id: int, settings: Settings | None = None) -> list[int]:
    """One user's recent positive movie ids, newest last (``[]`` when the stored history is empty).

    Raises UnknownUserError when no history is stored for the user, InvalidRequestError for a bad
    id, StoreError when Redis is unreachable.
    """
    ids = _check_ids([user_id])
    settings = settings or load_settings()
    movie_ids = _histories(ids, settings)[ids[0]]
    if movie_ids is None:
        raise UnknownUserError(
            f"user {ids[0]} has no history in the online store (project {PROJECT} at "
            f"{settings.redis_address}); check the id or run the nightly publish"
        )
    return movie_ids
