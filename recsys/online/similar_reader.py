"""Fast lookup of a movie's similar movies (Feast view ``movie_similar``) with titles, read straight
from Feast's Redis layout like the user lists (recsys.online.reader: the same keys, decoding, checks
and takedown filter, in one pipelined round trip plus one for the titles)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from recsys import checks
from recsys.config import Settings, load_settings
from recsys.errors import InvalidRequestError, UnknownMovieError
from recsys.online.layout import MOVIE_KEY, PROJECT, SIMILAR_VIEW, decode_value, entity_key, field_key
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
from recsys.runtime.content import COLLABORATIVE

SIMILAR_FIELDS = [field_key(SIMILAR_VIEW, name) for name in ("movie_ids", "scores", "source")]
NONE = "none"  # the source of an answer without a list


@dataclass(frozen=True)
class SimilarAnswer:
    """One movie's answer: ``source`` (``collaborative``: from the movie's trained vector,
    ``content``: from its features alone, as a movie with no or too few ratings is embedded;
    ``none``: no list, see ``reason``) and its [movie_id, score, title] triples, best first."""

    source: str
    similar: list[Triple] = field(default_factory=list)
    reason: str = ""


def _similar_replies(
    ids: list[int], k: int, settings: Settings
) -> tuple[dict[int, tuple[str, list[int], list[float]] | None], set[int]]:
    """(each movie's stored (source, movie_ids, scores) or None, the movies with a stored title):
    one pipelined round trip (the title lives in the same hash as the list)."""
    conn = _client(settings.redis_connection)
    with _store_errors(settings):
        commands = [(entity_key(MOVIE_KEY, m), [*SIMILAR_FIELDS, TITLE_FIELD]) for m in ids]
        replies, blocked, _ = _hmget_unblocked(conn, commands)
    lists: dict[int, tuple[str, list[int], list[float]] | None] = {}
    for m, (items, scores, source, _) in zip(ids, replies):
        if items is None:
            lists[m] = None
            continue
        kept = _first_unblocked(items, scores, k, blocked)
        # a list stored before sources were came from its movie's trained vector
        lists[m] = (str(decode_value(source) or COLLABORATIVE), *kept[:2])
    return lists, {m for m, reply in zip(ids, replies) if reply[3] is not None}


def stored_similar(
    movie_ids: Iterable[Any], k: int = checks.MAX_K, settings: Settings | None = None
) -> dict[int, tuple[list[int], list[float]] | None]:
    """Each movie's stored (movie_ids, scores), the first ``k``, best first; None for a movie without
    a stored list. One pipelined round trip. Errors as :func:`stored_lists`."""
    lists = _similar_replies(_check_movies(movie_ids, k), k, settings or load_settings())[0]
    return {m: None if got is None else (got[1], got[2]) for m, got in lists.items()}


def no_similar_reason(movie_id: int, known: bool, settings: Settings) -> str:
    """Why a movie has no similar-movies list: a catalogue movie that arrived after the lists were
    last published, or an id the online store does not know."""
    if known:
        return (
            f"movie {movie_id} is in the catalogue but has no similar-movies list yet: the lists "
            "were published before it arrived; run the nightly publish"
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
    answers = similar_answers(movie_ids, k, settings)
    return {m: a.reason if a.source == NONE else a.similar for m, a in answers.items()}


def similar_answers(
    movie_ids: Iterable[Any], k: int = 10, settings: Settings | None = None
) -> dict[int, SimilarAnswer]:
    """Each movie's :class:`SimilarAnswer`: its source and ``k`` most similar movies, or why it has
    none. Errors as :func:`similar_or_reasons`."""
    return read_similar(_check_movies(movie_ids, k), k, settings or load_settings())


def read_similar(ids: list[int], k: int, settings: Settings) -> dict[int, SimilarAnswer]:
    """:func:`similar_answers` for ids and ``k`` a door has already checked (recsys.checks)."""
    lists, known = _similar_replies(ids, k, settings)
    found = {m: got for m, got in lists.items() if got is not None}
    short = [(m, len(items)) for m, (_, items, _) in found.items() if len(items) < k]
    if short:
        movie, held = short[0]
        raise InvalidRequestError(
            f"k must be at most {held}, the number of similar movies stored for movie {movie} "
            f"(the movie_similar version's K, less any blocked movies), got {k}"
        )
    named = titles({m for _, items, _ in found.values() for m in items}, settings) if found else {}
    out: dict[int, SimilarAnswer] = {}
    for m, got in lists.items():
        if got is None:
            out[m] = SimilarAnswer(NONE, reason=no_similar_reason(m, m in known, settings))
        else:
            source, items, scores = got
            out[m] = SimilarAnswer(source, [(i, s, named[i]) for i, s in zip(items, scores)])
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
    return _all_similar(similar_answers(movie_ids, k, settings))


def _all_similar(found: dict[int, SimilarAnswer]) -> dict[int, list[Triple]]:
    """The triples of every movie; UnknownMovieError naming the first without a list and why."""
    missing = [answer.reason for answer in found.values() if answer.source == NONE]
    if missing:
        more = f" ({len(missing) - 1} more movie(s) without a list)" if len(missing) > 1 else ""
        raise UnknownMovieError(missing[0] + more)
    return {m: answer.similar for m, answer in found.items()}


def similar(movie_id: Any, k: int = 10, settings: Settings | None = None) -> list[Triple]:
    """The ``k`` most similar movies of one movie (errors as :func:`similar_many`)."""
    ids = _check_movies([movie_id], k)
    return _all_similar(read_similar(ids, k, settings or load_settings()))[ids[0]]
