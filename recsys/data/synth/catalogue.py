"""Movies (ids, genres, years, clusters, themes, popularity), users' activity, tastes and timelines."""

from __future__ import annotations

import calendar
import logging
from dataclasses import dataclass

import numpy as np

from recsys.data.synth.params import (
    ACTIVITY_SIGMA,
    END,
    GENRE_COUNTS,
    GENRES,
    ID_SPREAD,
    MIN_PER_USER,
    NO_GENRES,
    POPULARITY_CURVE,
    PRESETS,
    RATING_GAP_S,
    SESSION_GAP_S,
    SESSION_LENGTH,
    SINGLE_SESSION_SHARE,
    START,
    THEME_SIZE,
    YEAR_WEIGHTS,
    SynthParams,
)

log = logging.getLogger(__name__)


@dataclass
class Catalogue:
    movie_ids: np.ndarray  # [M] int64, ascending, sparse in 1..~4.9 M
    clusters: np.ndarray  # [M] int64 in [0, K)
    themes: np.ndarray  # [M] int64: ~THEME_SIZE movies of one cluster (a franchise, a director)
    popularity: np.ndarray  # [M] float64, sums to 1
    quality: np.ndarray  # [M] float64, the movie's effect on its stars (sd ~0.7)
    genres: list[str]  # [M] pipe-separated MovieLens genres
    years: np.ndarray  # [M] int64 release year, drawn apart from the ratings
    titles: list[str]  # [M] "Word Word (<year>)" (recsys.data.synth.metadata; filled by generate)


@dataclass
class Tastes:
    clusters: np.ndarray  # [U, 2, 3] int64: early and late taste, three clusters each
    weights: np.ndarray  # [U, 2, 3] float64, each taste sums to 1
    drift: np.ndarray  # [U] float64 in [0.3, 0.8]: weight of the late taste at the last rating


@dataclass
class Release:
    params: SynthParams
    ratings: dict[str, np.ndarray]  # user_id, movie_id, rating, timestamp [R]; by user, movie
    tags: dict[str, np.ndarray]  # user_id, movie_id, tag, timestamp [T]; by user, movie, time
    catalogue: Catalogue
    tastes: Tastes
    stats: dict


def activity(rng: np.random.Generator, params: SynthParams) -> np.ndarray:
    """Ratings per user [U] int64: 20 + a lognormal tail capped at ``max_per_user``, summing to
    ``params.ratings`` exactly (water-filling, then largest remainders)."""
    tail = rng.lognormal(0.0, ACTIVITY_SIGMA, params.users)
    extra, room = params.ratings - MIN_PER_USER * params.users, params.max_per_user - MIN_PER_USER
    share, free = np.zeros(params.users), np.ones(params.users, dtype=bool)
    while free.any():
        budget = extra - share[~free].sum()
        share[free] = tail[free] * budget / tail[free].sum()
        over = free & (share >= room)
        if not over.any():
            break
        share[over], free = room, free & ~over
    counts = np.floor(share).astype(np.int64)
    counts[np.argsort(counts - share, kind="stable")[: extra - counts.sum()]] += 1
    return counts + MIN_PER_USER


def catalogue(rng: np.random.Generator, n_movies: int) -> Catalogue:
    """Movies with sparse ids, clusters, genres tied to them, popularity, quality and drawn years
    (titles come with the ratings: recsys.data.synth.generate)."""
    ids = np.sort(rng.choice(max(n_movies, round(n_movies * ID_SPREAD)), n_movies, replace=False)) + 1
    k = int(np.clip(n_movies // 50, 2, 24))
    clusters = rng.choice(k, n_movies, p=rng.dirichlet(np.full(k, 8.0)))
    knots = np.array(POPULARITY_CURVE)
    rank = (np.arange(n_movies) + 0.5) / PRESETS["ml-20m"].movies
    curve = np.exp(np.interp(rank, knots[:, 0], np.log(knots[:, 1])))
    by_id = np.argsort(np.argsort(np.arange(n_movies) / n_movies + rng.normal(0, 1, n_movies)))
    popularity = curve[by_id] / curve.sum()  # older (lower) ids tend to be more popular
    log_pop = np.log(popularity)
    quality = 0.3 * (log_pop - log_pop.mean()) / log_pop.std() + rng.normal(0, 0.6, n_movies)
    years = 2015 - np.minimum(rng.exponential(20, n_movies).astype(np.int64), 100)
    genres = _genres(rng, clusters, k)
    per_cluster = -(-np.bincount(clusters, minlength=k) // THEME_SIZE)
    themes = (np.cumsum(per_cluster) - per_cluster)[clusters] + (
        rng.random(n_movies) * per_cluster[clusters]
    ).astype(np.int64)  # numbered cluster by cluster
    return Catalogue(ids, clusters, themes, popularity, quality, genres, years, [])


def _genres(rng: np.random.Generator, clusters: np.ndarray, k: int) -> list[str]:
    """Per movie: its cluster's first genre, each further one (up to 3) with p 0.6, one extra
    genre with p 0.35; 1% have none, as in ml-20m."""
    p = np.array(GENRE_COUNTS) / sum(GENRE_COUNTS)
    n = len(clusters)
    core = rng.choice(len(GENRES), size=(k, 3), p=p)[clusters]
    keep = (rng.random((n, 3)) < 0.6) & (np.arange(3) < rng.integers(1, 4, k)[clusters][:, None])
    keep[:, 0] = True
    flags = np.zeros((n, len(GENRES)), dtype=bool)
    for j in range(3):
        flags[np.flatnonzero(keep[:, j]), core[keep[:, j], j]] = True
    extra = rng.random(n) < 0.35
    flags[np.flatnonzero(extra), rng.choice(len(GENRES), n, p=p)[extra]] = True
    none = rng.random(n) < 0.01
    names = np.array(GENRES)
    return [NO_GENRES if empty else "|".join(names[row]) for row, empty in zip(flags, none)]


def tastes(rng: np.random.Generator, n_users: int, cluster_mass: np.ndarray) -> Tastes:
    """Early and late tastes; clusters drawn by their popularity mass, so demand meets supply and
    movie counts follow popularity. The late taste keeps each early cluster with p 0.5."""
    clusters = rng.choice(len(cluster_mass), size=(n_users, 2, 3), p=cluster_mass)
    weights = rng.dirichlet(np.full(3, 0.8), size=(n_users, 2))
    kept = rng.random((n_users, 3)) < 0.5
    clusters[:, 1] = np.where(kept, clusters[:, 0], clusters[:, 1])
    return Tastes(clusters, weights, rng.uniform(0.3, 0.8, n_users))


def timeline(rng: np.random.Generator, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps [R] int64 (user-major, ascending within a user) and session index [R]."""
    n_users, first = len(counts), np.cumsum(counts) - counts
    user = np.repeat(np.arange(n_users), counts)
    length = rng.lognormal(np.log(SESSION_LENGTH), 0.8, n_users)
    p_new = np.where(rng.random(n_users) < SINGLE_SESSION_SHARE, 0.0, 1 / np.maximum(length, 1))
    new = rng.random(len(user)) < p_new[user]
    new[first] = False
    gap = np.floor(rng.lognormal(np.log(RATING_GAP_S), 1.0, len(user)))
    gap[first] = 0
    gap[new] = 0
    between = np.zeros(len(user))
    between[new] = rng.lognormal(np.log(SESSION_GAP_S), 1.5, np.count_nonzero(new))
    room = END - START - np.bincount(user, gap, n_users)  # squeeze long careers into 20 years
    squeeze = np.minimum(1.0, room / np.maximum(np.bincount(user, between, n_users), 1.0))
    offset = np.cumsum((np.floor(between * squeeze[user]) + gap).astype(np.int64))
    offset -= offset[first][user]
    span = offset[first + counts - 1]
    # the user's activity centre, as a share of 1995..2015, places the user's own span in it
    place = (_activity_centres(rng, n_users) - START) / (END - START)
    start = START + (place * (END - 1 - START - span)).astype(np.int64)
    new[first] = True
    return start[user] + offset, np.cumsum(new) - 1


def _activity_centres(rng: np.random.Generator, n_users: int) -> np.ndarray:
    """Epoch seconds [U] int64 spread over 1995..2015 by YEAR_WEIGHTS."""
    edges = np.array([START] + [calendar.timegm((y, 1, 1, 0, 0, 0)) for y in range(1996, 2016)] + [END])
    year = rng.choice(len(YEAR_WEIGHTS), n_users, p=np.array(YEAR_WEIGHTS) / sum(YEAR_WEIGHTS))
    return edges[year] + (rng.random(n_users) * (edges[year + 1] - edges[year])).astype(np.int64)
