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
in the same round trip, before it is cut to k.

Ids and ``k`` are checked once per door: the public functions (the Python API) check them; the
``read_*`` functions are for the CLI and HTTP doors, which checked them already (recsys.checks).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

from recsys import checks
from recsys.config import Settings, load_settings
from recsys.errors import InvalidRequestError, StoreError, UnknownMovieError, UnknownUserError
from recsys.online.layout import (
    BLOCKLIST_KEY,
    HISTORY_VIEW,
    MOVIE_KEY,
    MOVIE_VIEW,
    PROJECT,
    SIMILAR_VIEW,
    USER_KEY,
    USER_VIEW,
    blocked_ids,
    decode_value,
    entity_key,
    field_key,
)
from recsys.ops import redis_server

log = logging.getLogger(__name__)

Triple = tuple[int, float, str]


USER_FIELDS = [field_key(USER_VIEW, "item_ids"), field_key(USER_VIEW, "scores")]
TITLE_FIELD = field_key(MOVIE_VIEW, "title")
HISTORY_FIELD = field_key(HISTORY_VIEW, "movie_ids")
SIMILAR_FIELDS = [field_key(SIMILAR_VIEW, "movie_ids"), field_key(SIMILAR_VIEW, "scores")]


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
) -> tuple[list[list[Any]], set[int]]:
    """One HMGET reply per (key, fields), in order, and the blocked movies (recsys.online.blocklist),
    from one pipelined round trip."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.hkeys(BLOCKLIST_KEY)
        for key, fields in commands:
            pipe.hmget(key, fields)  # type: ignore[arg-type]  # redis-py accepts bytes keys
        blocked, *replies = pipe.execute()
    return replies, blocked_ids(blocked)


def _first_unblocked(items: bytes, scores: bytes, k: int, blocked: set[int]) -> tuple[list[int], list[float]]:
    """A stored list's first ``k`` movies that are not blocked, with their scores: a blocked movie
    leaves the answer at once, and the next one moves up (at most k + len(blocked) decoded)."""
    if not blocked:
        return decode_value(items, k), decode_value(scores, k)
    limit = k + len(blocked)
    kept = [
        (m, s) for m, s in zip(decode_value(items, limit), decode_value(scores, limit)) if m not in blocked
    ]
    return [m for m, _ in kept[:k]], [s for _, s in kept[:k]]


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
    return read_lists_and_blocked(ids, k, settings)[0]


def read_lists_and_blocked(
    ids: list[int], k: int, settings: Settings
) -> tuple[dict[int, tuple[list[int], list[float]] | None], set[int]]:
    """:func:`read_lists` and the blocked movies it left out, from the same round trip (the HTTP
    model leaves them out of the lists it computes for users without a stored one)."""
    conn = _client(settings.redis_connection)
    with _store_errors(settings):
        replies, blocked = _hmget_unblocked(conn, [(entity_key(USER_KEY, u), USER_FIELDS) for u in ids])
    lists = {}
    for user_id, (items, scores) in zip(ids, replies):
        lists[user_id] = None if items is None else _first_unblocked(items, scores, k, blocked)
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
    lists = read_lists(ids, k, settings)
    unknown = [str(u) for u, found in lists.items() if found is None]
    if unknown:
        raise UnknownUserError(
            f"user {', '.join(unknown[:5])} has no recommendations in the online store (project "
            f"{PROJECT} at {settings.redis_address}); check the id or run the nightly publish"
        )
    found = {u: pair for u, pair in lists.items() if pair is not None}
    short = [(u, len(items)) for u, (items, _) in found.items() if len(items) < k]
    if short:  # the list's K is the model version's (set at export): asking for more is an error
        user_id, held = short[0]
        raise InvalidRequestError(
            f"k must be at most {held}, the length of the list stored for user {user_id} "
            f"(the model version's K, less any blocked movies), got {k}"
        )
    named = titles({m for items, _ in found.values() for m in items}, settings)
    return {u: [(m, s, named[m]) for m, s in zip(items, scores)] for u, (items, scores) in found.items()}


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


def _similar_replies(
    ids: list[int], k: int, settings: Settings
) -> tuple[Settings, dict[int, tuple[list[int], list[float]] | None], set[int]]:
    """(settings, each movie's stored (movie_ids, scores) or None, the movies with a stored title):
    one pipelined round trip (the title lives in the same hash as the list)."""
    conn = _client(settings.redis_connection)
    with _store_errors(settings):
        commands = [(entity_key(MOVIE_KEY, m), [*SIMILAR_FIELDS, TITLE_FIELD]) for m in ids]
        replies, blocked = _hmget_unblocked(conn, commands)
    lists = {
        m: None if items is None else _first_unblocked(items, scores, k, blocked)
        for m, (items, scores, _) in zip(ids, replies)
    }
    return settings, lists, {m for m, reply in zip(ids, replies) if reply[2] is not None}


def stored_similar(
    movie_ids: Iterable[Any], k: int = checks.MAX_K, settings: Settings | None = None
) -> dict[int, tuple[list[int], list[float]] | None]:
    """Each movie's stored (movie_ids, scores), the first ``k``, best first; None for a movie without
    a stored list. One pipelined round trip. Errors as :func:`stored_lists`."""
    return _similar_replies(_check_movies(movie_ids, k), k, settings or load_settings())[1]


def no_similar_reason(movie_id: int, known: bool, settings: Settings) -> str:
    """Why a movie has no similar-movies list: a catalogue movie the model left out, or an id the
    online store does not know."""
    if known:
        return (
            f"movie {movie_id} is in the catalogue but has no similar-movies list: it has too few "
            "ratings for the movie_similar model (movies rarely rated are left out)"
        )
    return (
        f"movie {movie_id} is not in the online store's catalogue (project {PROJECT} at "
        f"{settings.redis_address}): check the id, or run the nightly publish"
    )


def similar_or_reasons(
    movie_ids: Iterable[Any], k: int = 10, settings: Settings | None = None
) -> dict[int, list[Triple] | str]:
    """Each movie's ``k`` most similar movies as [movie_id, score, title] triples, best first, or,
    for a movie without a stored list, the reason (:func:`no_similar_reason`). Two round trips.

    Raises InvalidRequestError for a bad id, k outside 1..MAX_K or beyond a stored list's length
    (the movie_similar version's K), StoreError when Redis is unreachable.
    """
    return read_similar(_check_movies(movie_ids, k), k, settings or load_settings())


def read_similar(ids: list[int], k: int, settings: Settings) -> dict[int, list[Triple] | str]:
    """:func:`similar_or_reasons` for ids and ``k`` a door has already checked (recsys.checks)."""
    settings, lists, known = _similar_replies(ids, k, settings)
    found = {m: pair for m, pair in lists.items() if pair is not None}
    short = [(m, len(items)) for m, (items, _) in found.items() if len(items) < k]
    if short:
        movie, held = short[0]
        raise InvalidRequestError(
            f"k must be at most {held}, the number of similar movies stored for movie {movie} "
            f"(the movie_similar version's K, less any blocked movies), got {k}"
        )
    named = titles({m for items, _ in found.values() for m in items}, settings) if found else {}
    out: dict[int, list[Triple] | str] = {}
    for m, pair in lists.items():
        if pair is None:
            out[m] = no_similar_reason(m, m in known, settings)
        else:
            out[m] = [(i, s, named[i]) for i, s in zip(*pair)]
    return out


def similar_many(
    movie_ids: Iterable[Any], k: int = 10, settings: Settings | None = None
) -> dict[int, list[Triple]]:
    """The ``k`` most similar movies of each movie as [movie_id, score, title] triples, best first
    (two round trips in all).

    Raises InvalidRequestError for a bad id, k outside 1..MAX_K or beyond the stored lists' length
    (the movie_similar version's K), UnknownMovieError naming the first movie without a list and
    why (not in the catalogue, or in it but too rarely rated for the model), StoreError when Redis
    is unreachable.
    """
    return _all_similar(read_similar(_check_movies(movie_ids, k), k, settings or load_settings()))


def _all_similar(found: dict[int, list[Triple] | str]) -> dict[int, list[Triple]]:
    """The triples of every movie; UnknownMovieError naming the first without a list and why."""
    missing = [reason for reason in found.values() if isinstance(reason, str)]
    if missing:
        more = f" ({len(missing) - 1} more movie(s) without a list)" if len(missing) > 1 else ""
        raise UnknownMovieError(missing[0] + more)
    return {m: triples for m, triples in found.items() if not isinstance(triples, str)}


def similar(movie_id: Any, k: int = 10, settings: Settings | None = None) -> list[Triple]:
    """The ``k`` most similar movies of one movie (errors as :func:`similar_many`)."""
    ids = _check_movies([movie_id], k)
    return _all_similar(read_similar(ids, k, settings or load_settings()))[ids[0]]
