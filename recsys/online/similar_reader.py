"""Fast lookup of a movie's similar movies (Feast view ``movie_similar``) with titles, read straight
from Feast's Redis layout like the user lists (recsys.online.reader: the same keys, decoding, checks
and takedown filter, in one pipelined round trip plus one for the titles)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from recsys import checks
from recsys.config import Settings, load_settings
from recsys.errors import InvalidRequestError, UnknownMovieError
from recsys.online.layout import MOVIE_KEY, PROJECT, SIMILAR_VIEW, entity_key, field_key
from recsys.online.reader import (
    TITLE_FIELD,
    Triple,
    _check_movies,
    _client,
    _first_unblocked,
    _hmget_unblocked,
    _store_errors,
    titles,
)

SIMILAR_FIELDS = [field_key(SIMILAR_VIEW, "movie_ids"), field_key(SIMILAR_VIEW, "scores")]


def _similar_replies(
    ids: list[int], k: int, settings: Settings
) -> tuple[Settings, dict[int, tuple[list[int], list[float]] | None], set[int]]:
    """(settings, each movie's stored (movie_ids, scores) or None, the movies with a stored title):
    one pipelined round trip (the title lives in the same hash as the list)."""
    conn = _client(settings.redis_connection)
    with _store_errors(settings):
        commands = [(entity_key(MOVIE_KEY, m), [*SIMILAR_FIELDS, TITLE_FIELD]) for m in ids]
        replies, blocked, _ = _hmget_unblocked(conn, commands)
    lists = {
        m: None if items is None else _first_unblocked(items, scores, k, blocked)[:2]
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
