"""MovieLens-shaped synthetic ratings with a planted preference structure (``recsys synth``).

A release folder that recsys.data.prepared's loader and ``recsys ingest --source`` read like the real one:
``ratings.csv`` (userId,movieId,rating,timestamp, sorted by userId then movieId), ``movies.csv``
(movieId,title,genres) and ``README.txt`` (synthetic, generator version, parameters, realised
statistics). Same parameters and seed -> byte-identical files.

Shape, after ml-20m: user ids 1..U, each user >= 20 ratings plus a lognormal tail; sparse movie
ids up to ~4.9 x M; movie popularity along ml-20m's rank-frequency curve, every movie rated at
least once; ml-20m's star histogram (whole stars only before 2003-02-18, as on MovieLens);
timestamps 1995-2015 in per-user sessions (ratings seconds apart, sessions days to years apart).

Planted structure: each movie belongs to one of K latent clusters, whose genres it carries, and
to a theme (~40 movies of its cluster: a franchise, a director). Each user has an early and a late
taste (three weighted clusters each); the late one gains weight along the user's timeline. A
rating is drawn from the theme of its run (a few consecutive ratings), the cluster of its session,
the user's current taste or global popularity, by popularity inside that group; its stars rise with
the user's current affinity to the movie's cluster. So later positives follow earlier and recent
ones: on the small preset a cluster-aware popularity baseline has about 3.5x MostPop's Recall@10.
"""

from __future__ import annotations

import calendar
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.errors import ConfigError, DataError
from recsys.files import swap_in

log = logging.getLogger(__name__)

VERSION = "1"  # bump whenever the same parameters and seed would give other files
MIN_PER_USER = 20  # ratings of every user, as in every MovieLens release
MAX_USER_SHARE = 0.35  # most movies one user rates, share of catalogue (ml-20m: 9,254 of 26,744)
ID_SPREAD = 131_262 / 26_744  # ml-20m's largest movie id over its number of rated movies
START, END = 789_652_800, 1_427_846_400  # 1995-01-09 .. 2015-04-01 UTC, ml-20m's span
HALF_STARS_FROM = 1_045_526_400  # 2003-02-18 UTC: MovieLens took half stars from then on
STARS = np.arange(1, 11) / 2  # 0.5 .. 5.0
STAR_COUNTS = (
    239_125,
    680_732,
    279_252,
    1_430_997,
    883_398,
    4_291_193,
    2_200_156,
    5_561_926,
    1_534_824,
    2_898_660,
)  # ml-20m, 0.5 .. 5.0 stars
WHOLE_STAR_SHARES = (0.056, 0.108, 0.261, 0.349, 0.226)  # ml-1m (whole stars only), 1 .. 5
# Popularity by rank: (rank / 26,744, sampling weight relative to the top). By absolute rank, as a
# movie's share of all ratings at a given rank is about the same in ml-1m and ml-20m; a smaller
# catalogue uses the head of the curve only. Calibrated so that ml-20m's size realises ml-20m's
# rank-frequency curve (top ~50k, median ~18, tail 1): a user rates a movie once, so the head must
# be drawn more often than it is finally rated.
POPULARITY_CURVE = (
    (0.0, 1.0),
    (0.001, 0.32),
    (0.01, 0.062),
    (0.05, 6.9e-3),
    (0.12, 3.7e-4),
    (0.25, 5e-5),
    (0.5, 4.3e-7),
    (0.75, 3.2e-8),
    (0.88, 2.4e-9),
    (1.0, 2.4e-9),
)
# users' activity centres by year, 1995..2015, roughly as ml-20m's ratings spread over the years
YEAR_WEIGHTS = (0.01, 6, 2, 1, 6, 10, 6, 4, 4, 5, 8, 6, 5, 5, 4, 4, 3.5, 3.5, 3, 3, 1)
GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
GENRE_COUNTS = (
    3520,
    2329,
    1027,
    1139,
    8374,
    2939,
    2471,
    13344,
    1412,
    330,
    2611,
    196,
    1036,
    1514,
    4127,
    1743,
    4178,
    1194,
    676,
)  # movies per genre in ml-20m
NO_GENRES = "(no genres listed)"
ACTIVITY_SIGMA = 1.3  # lognormal tail of ratings per user beyond the first 20
SINGLE_SESSION_SHARE = 0.3  # users who rate everything in one sitting
SESSION_LENGTH = 12.0  # median ratings per session of the other users
SESSION_GAP_S, RATING_GAP_S = 7 * 86_400.0, 30.0  # median gaps between sessions / ratings
GROUP_FLATTEN = 0.6  # popularity exponent inside a cluster or theme
THEME_SIZE = 40  # movies per theme, a tight group inside a cluster
RUN_LENGTH = 4.0  # mean ratings in a run, a stretch of a session that sticks to one theme
MODE_SHARES = (0.4, 0.2, 0.25, 0.15)  # a rating follows its run's theme, its session's cluster,
# the user's current taste, or global popularity
REDRAW_ROUNDS = 12  # redraws of repeated (user, movie) pairs before drawing without replacement
AFFINITY_EFFECT = 3.0  # stars latent per unit of affinity (noise sd 1, user bias sd 0.5)


@dataclass(frozen=True)
class SynthParams:
    """Size and seed of a synthetic release."""

    users: int  # user ids 1..users
    movies: int  # movies in movies.csv, each rated at least once
    ratings: int  # rows of ratings.csv
    seed: int = 0

    @property
    def max_per_user(self) -> int:
        return max(MIN_PER_USER, int(MAX_USER_SHARE * self.movies))

    def check(self) -> None:
        """Raise ConfigError naming the first impossible value and what would fix it."""
        if self.users < 1 or self.movies < MIN_PER_USER or self.seed < 0:
            raise ConfigError(
                f"need users >= 1, movies >= {MIN_PER_USER} (every user rates "
                f"{MIN_PER_USER} distinct movies) and seed >= 0, got {self}"
            )
        low = max(MIN_PER_USER * self.users, self.movies)
        high = self.max_per_user * self.users
        if not low <= self.ratings <= high:
            raise ConfigError(
                f"ratings must be in {low:,}..{high:,} for {self.users:,} users and "
                f"{self.movies:,} movies ({MIN_PER_USER}..{self.max_per_user:,} per "
                f"user, every movie rated), got {self.ratings:,}"
            )


PRESETS = {
    "ml-20m": SynthParams(138_493, 26_744, 20_000_263),
    "small": SynthParams(6_040, 3_706, 1_000_209),
}  # ml-1m's shape


def params_for(
    preset: str = "small",
    users: int | None = None,
    movies: int | None = None,
    ratings: int | None = None,
    seed: int = 0,
) -> SynthParams:
    """A preset with the given numbers overriding it (ConfigError for an unknown preset or an
    impossible combination)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    base = PRESETS[preset]
    params = SynthParams(
        users if users is not None else base.users,
        movies if movies is not None else base.movies,
        ratings if ratings is not None else base.ratings,
        seed,
    )
    params.check()
    return params


@dataclass
class Catalogue:
    movie_ids: np.ndarray  # [M] int64, ascending, sparse in 1..~4.9 M
    clusters: np.ndarray  # [M] int64 in [0, K)
    themes: np.ndarray  # [M] int64: ~THEME_SIZE movies of one cluster (a franchise, a director)
    popularity: np.ndarray  # [M] float64, sums to 1
    quality: np.ndarray  # [M] float64, the movie's effect on its stars (sd ~0.7)
    titles: list[str]  # [M] "Synthetic Movie <id> (<year>)"
    genres: list[str]  # [M] pipe-separated MovieLens genres


@dataclass
class Tastes:
    clusters: np.ndarray  # [U, 2, 3] int64: early and late taste, three clusters each
    weights: np.ndarray  # [U, 2, 3] float64, each taste sums to 1
    drift: np.ndarray  # [U] float64 in [0.3, 0.8]: weight of the late taste at the last rating


@dataclass
class Release:
    params: SynthParams
    ratings: dict[str, np.ndarray]  # user_id, movie_id, rating, timestamp [R]; by user, movie
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
    """Movies with sparse ids, clusters, genres tied to them, popularity and quality."""
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
    titles = [f"Synthetic Movie {i} ({y})" for i, y in zip(ids.tolist(), years.tolist())]
    genres = _genres(rng, clusters, k)
    per_cluster = -(-np.bincount(clusters, minlength=k) // THEME_SIZE)
    themes = (np.cumsum(per_cluster) - per_cluster)[clusters] + (
        rng.random(n_movies) * per_cluster[clusters]
    ).astype(np.int64)  # numbered cluster by cluster
    return Catalogue(ids, clusters, themes, popularity, quality, titles, genres)


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


class _Sampler:
    """Draws movie indices inside a group: group g < K is cluster g, K + t is theme t, by
    popularity ** GROUP_FLATTEN; ``everywhere`` is the whole catalogue, by popularity. Themes are
    numbered cluster by cluster, so one order of the catalogue lays out every group as one stretch
    of the cumulative weights."""

    def __init__(self, cat: Catalogue) -> None:
        self.order = np.argsort(cat.themes, kind="stable")
        weight = cat.popularity**GROUP_FLATTEN
        self.cum = np.cumsum(weight[self.order])
        self.cum_all = np.cumsum(cat.popularity[self.order])
        self.n_clusters = int(cat.clusters.max()) + 1
        self.mass = np.r_[np.bincount(cat.clusters, weight, self.n_clusters), np.bincount(cat.themes, weight)]
        self.low = np.r_[
            0.0,
            np.cumsum(self.mass[: self.n_clusters])[:-1],
            0.0,
            np.cumsum(self.mass[self.n_clusters :])[:-1],
        ]
        self.cluster_mass = np.bincount(cat.clusters, cat.popularity, self.n_clusters)
        self.everywhere = len(self.mass)
        self.popularity = cat.popularity

    def __call__(self, rng: np.random.Generator, group: np.ndarray) -> np.ndarray:
        v = rng.random(len(group))
        anywhere = group == self.everywhere
        at = np.empty(len(group), dtype=np.int64)
        at[anywhere] = np.searchsorted(self.cum_all, v[anywhere] * self.cum_all[-1], side="right")
        g = group[~anywhere]
        at[~anywhere] = np.searchsorted(self.cum, self.low[g] + v[~anywhere] * self.mass[g], side="right")
        return self.order[np.minimum(at, len(self.cum) - 1)]


def draw_groups(
    rng: np.random.Generator,
    sampler: _Sampler,
    cat: Catalogue,
    taste: Tastes,
    user: np.ndarray,
    session: np.ndarray,
    frac: np.ndarray,
) -> np.ndarray:
    """The sampler group [R] each rating is drawn from (MODE_SHARES): the theme of its run (a
    stretch of ratings inside a session), its session's cluster, a cluster of the user's current
    taste, or the whole catalogue.

    A session's cluster comes from the taste at its start; a run's theme from a movie drawn in the
    session's cluster or in the current taste. ``frac`` [R] in [0, 1] is the rating's position
    along its user's timeline.
    """
    prof = user * 2 + (rng.random(len(user)) < frac * taste.drift[user])
    cum = np.cumsum(taste.weights, axis=2).reshape(-1, 3)
    v = rng.random(len(user))
    current = taste.clusters.reshape(-1)[prof * 3 + (v >= cum[prof, 0]) + (v >= cum[prof, 1])]
    session_new = np.diff(session, prepend=-1) > 0
    session_cluster = current[np.flatnonzero(session_new)][session - session[0]]
    run_new = session_new | (rng.random(len(user)) < 1 / RUN_LENGTH)
    run = np.cumsum(run_new) - 1
    anchor = np.where(rng.random(len(user)) < 0.5, session_cluster, current)[run_new]
    run_theme = sampler.n_clusters + cat.themes[sampler(rng, anchor)]
    mode = np.searchsorted(np.cumsum(MODE_SHARES), rng.random(len(user)), side="right")
    choices = (run_theme[run], session_cluster, current, sampler.everywhere)
    return np.choose(np.minimum(mode, 3), choices)


def draw_movies(
    rng: np.random.Generator,
    sampler: _Sampler,
    cat: Catalogue,
    taste: Tastes,
    user: np.ndarray,
    session: np.ndarray,
    frac: np.ndarray,
) -> np.ndarray:
    """Movie indices [R] of a block of whole users: no user rates a movie twice."""
    group = draw_groups(rng, sampler, cat, taste, user, session, frac)
    movie = sampler(rng, group)
    deduplicate(
        rng,
        movie,
        user,
        sampler.popularity,
        lambda rows, anywhere: sampler(
            rng, np.full(len(rows), sampler.everywhere) if anywhere else group[rows]
        ),
    )
    return movie


def deduplicate(
    rng: np.random.Generator,
    movie: np.ndarray,
    user: np.ndarray,
    popularity: np.ndarray,
    redraw: Callable[[np.ndarray, bool], np.ndarray],
) -> None:
    """Redraw (in place) each repeat of a (user, movie) pair until every pair is unique.

    ``user`` [R] is sorted; the earliest rating of a pair stays. Repeats are redrawn by
    ``redraw(rows, False)`` three times, then by global popularity (``True``) up to REDRAW_ROUNDS
    in all; the rest (heavy users whose clusters ran dry) is drawn by popularity without
    replacement among each user's unrated movies.
    """
    n_movies = len(popularity)
    keys = user * n_movies + movie
    order = np.argsort(keys, kind="stable")
    repeat = keys[order][1:] == keys[order][:-1]
    taken = [keys[order][np.r_[True, ~repeat]]]  # sorted arrays of the pairs kept so far
    todo = np.sort(order[1:][repeat])
    for step in range(REDRAW_ROUNDS):
        if not len(todo):
            return
        new = redraw(todo, step >= 3)
        key = user[todo] * n_movies + new
        fresh = np.zeros(len(key), dtype=bool)
        fresh[np.unique(key, return_index=True)[1]] = True  # a pair drawn twice now: first wins
        for pairs in taken:
            fresh &= ~_isin_sorted(key, pairs)
        movie[todo[fresh]] = new[fresh]
        taken.append(np.sort(key[fresh]))
        todo = todo[~fresh]
    _fill(rng, movie, user, todo, popularity)


def _isin_sorted(values: np.ndarray, sorted_: np.ndarray) -> np.ndarray:
    if not len(sorted_):
        return np.zeros(len(values), dtype=bool)
    return sorted_[np.minimum(np.searchsorted(sorted_, values), len(sorted_) - 1)] == values


def _fill(
    rng: np.random.Generator, movie: np.ndarray, user: np.ndarray, rows: np.ndarray, popularity: np.ndarray
) -> None:
    """Give ``rows`` (sorted) movies their users have not rated: popularity-weighted draws
    without replacement (Gumbel top-k), a block of users at a time."""
    owners, start, need = np.unique(user[rows], return_index=True, return_counts=True)
    lows, highs = np.searchsorted(user, owners), np.searchsorted(user, owners, side="right")
    for lo in range(0, len(owners), 256):
        keys = np.log(popularity) + rng.gumbel(size=(min(256, len(owners) - lo), len(popularity)))
        for i, j in enumerate(range(lo, lo + len(keys))):
            mine = rows[start[j] : start[j] + need[j]]
            keys[i, movie[np.setdiff1d(np.arange(lows[j], highs[j]), mine)]] = -np.inf
            top = np.argpartition(-keys[i], need[j] - 1)[: need[j]]
            movie[mine] = top[np.argsort(-keys[i, top])]


def cover(rng: np.random.Generator, movie: np.ndarray, n_movies: int) -> None:
    """Give every unrated movie one rating (in place), taken from a movie rated more than once."""
    unrated = np.flatnonzero(np.bincount(movie, minlength=n_movies) == 0)
    if not len(unrated):
        return
    last = np.full(n_movies, -1)
    np.maximum.at(last, movie, np.arange(len(movie)))
    spare = np.ones(len(movie), dtype=bool)
    spare[last[last >= 0]] = False  # each movie keeps its last rating
    spare = np.flatnonzero(spare)
    donors = np.sort(spare[rng.choice(len(spare), len(unrated), replace=False)])
    movie[donors] = rng.permutation(unrated)


def affinity(taste: Tastes, user: np.ndarray, cluster: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """The user's current weight [R] in [0, 1] on each rating's cluster."""
    late = frac * taste.drift[user]
    clusters, weights = taste.clusters.reshape(-1), taste.weights.reshape(-1)
    out = np.zeros(len(user))
    for slot in range(6):  # early taste's three clusters, then the late one's
        at = user * 6 + slot
        share = weights[at] * (1 - late if slot < 3 else late)
        out += np.where(clusters[at] == cluster, share, 0.0)
    return out


def stars(latent: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
    """Map latent scores [R] to stars [R] by quantiles: whole stars before HALF_STARS_FROM with
    ml-1m's histogram, half stars after with what makes the whole ml-20m's histogram."""
    whole = timestamp < HALF_STARS_FROM
    target = np.array(STAR_COUNTS) / sum(STAR_COUNTS)
    whole_shares = np.zeros(10)
    whole_shares[1::2] = WHOLE_STAR_SHARES
    w = whole.mean()
    half_shares = np.clip(target - w * whole_shares, 0, None) if w < 1 else target
    out = np.empty(len(latent))
    for mask, shares in ((whole, whole_shares), (~whole, half_shares / half_shares.sum())):
        z = latent[mask]
        values, shares = STARS[shares > 0], shares[shares > 0]
        cuts = np.quantile(z[:: max(1, len(z) // 1_000_000)], np.cumsum(shares)[:-1]) if len(z) else []
        out[mask] = values[np.searchsorted(cuts, z, side="right")]
    return out


def generate(params: SynthParams) -> Release:
    """Draw a whole release in memory (ConfigError for impossible parameters)."""
    params.check()
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(params.seed).spawn(6)]
    cat = catalogue(rngs[0], params.movies)
    sampler = _Sampler(cat)
    taste = tastes(rngs[1], params.users, sampler.cluster_mass)
    counts = activity(rngs[2], params)
    timestamp, session = timeline(rngs[3], counts)
    user = np.repeat(np.arange(params.users), counts)
    frac = (np.arange(len(user)) - (np.cumsum(counts) - counts)[user]) / (counts - 1)[user]
    blocks = _blocks(counts)
    movie = np.concatenate(
        [
            draw_movies(rngs[4], sampler, cat, taste, user[lo:hi], session[lo:hi], frac[lo:hi])
            for lo, hi in blocks
        ]
    )
    del session
    cover(rngs[4], movie, params.movies)
    latent = AFFINITY_EFFECT * affinity(taste, user, cat.clusters[movie], frac)
    latent += rngs[5].normal(0, 0.5, params.users)[user] + cat.quality[movie]
    latent += rngs[5].normal(0, 1, len(user))
    rating = stars(latent, timestamp)
    del latent, frac
    key = user * params.movies + movie  # rows by user, then movie id (ids ascend with indices)
    order = np.concatenate([lo + np.argsort(key[lo:hi]) for lo, hi in blocks])
    ratings = {
        "user_id": user[order] + 1,
        "movie_id": cat.movie_ids[movie[order]],
        "rating": rating[order],
        "timestamp": timestamp[order],
    }
    stats = realised_stats(ratings, np.bincount(movie, minlength=params.movies), counts)
    structure = {"clusters": sampler.n_clusters, "themes": int(cat.themes.max() + 1)}
    return Release(params, ratings, cat, taste, {**stats, **structure})


def _blocks(counts: np.ndarray, size: int = 1 << 20) -> list[tuple[int, int]]:
    """Row ranges of about ``size`` rows that hold whole users (cache-sized work)."""
    ends = np.cumsum(counts)
    cuts = ends[np.unique(np.searchsorted(ends, np.arange(size, ends[-1], size)))]
    bounds = np.unique(np.r_[0, cuts, ends[-1]])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def realised_stats(ratings: dict[str, np.ndarray], per_movie: np.ndarray, per_user: np.ndarray) -> dict:
    """Counts, ratings per user and per movie, star shares, time range and ratings per year."""

    def spread(a: np.ndarray) -> dict:
        return {
            "min": int(a.min()),
            "median": float(np.median(a)),
            "mean": round(float(a.mean()), 1),
            "max": int(a.max()),
        }

    shares = np.bincount((ratings["rating"] * 2).astype(np.int64) - 1, minlength=10)
    year = ratings["timestamp"].astype("datetime64[s]").astype("datetime64[Y]")
    years, per_year = np.unique(year.astype(np.int64) + 1970, return_counts=True)
    first, last = pd.to_datetime([ratings["timestamp"].min(), ratings["timestamp"].max()], unit="s")
    n = len(ratings["rating"])
    return {
        "users": len(per_user),
        "movies": len(per_movie),
        "ratings": n,
        "ratings_per_user": spread(per_user),
        "ratings_per_movie": spread(per_movie),
        "star_shares": {f"{s:.1f}": round(c / n, 4) for s, c in zip(STARS, shares)},
        "share_4_or_more": round(float(shares[7:].sum() / n), 4),
        "first_rating": first.isoformat(),
        "last_rating": last.isoformat(),
        "year_shares": {int(y): round(c / n, 4) for y, c in zip(years, per_year)},
    }


def write_release(release: Release, folder: Path) -> None:
    """Write ratings.csv, movies.csv and README.txt into an existing ``folder``."""
    import pyarrow as pa
    from pyarrow import csv

    frame, cat = release.ratings, release.catalogue
    labels = pa.array([f"{s:.1f}" for s in STARS])
    codes = pa.array((frame["rating"] * 2).astype(np.int8) - 1)
    table = pa.table(
        {
            "userId": frame["user_id"],
            "movieId": frame["movie_id"],
            "rating": pa.DictionaryArray.from_arrays(codes, labels).cast(pa.string()),
            "timestamp": frame["timestamp"],
        }
    )
    with (folder / "ratings.csv").open("wb") as out:
        out.write(b"userId,movieId,rating,timestamp\n")  # pyarrow would quote the header
        csv.write_csv(table, out, csv.WriteOptions(include_header=False, quoting_style="none"))
    movies = pd.DataFrame({"movieId": cat.movie_ids, "title": cat.titles, "genres": cat.genres})
    movies.to_csv(folder / "movies.csv", index=False, lineterminator="\n")
    (folder / "README.txt").write_text(readme(release))


def readme(release: Release) -> str:
    """The release's README: what it is, how to make it again, and what it realised."""
    p = release.params
    return (
        f"SYNTHETIC MovieLens-shaped ratings: NOT real user data\n{'=' * 54}\n\n"
        f"Generated by `recsys synth` (recsys.data.synth, generator version {VERSION}):\n"
        f"  recsys synth --users {p.users} --movies {p.movies} --ratings {p.ratings} "
        f"--seed {p.seed} --out DIR\nThe same version, parameters and seed give byte-identical "
        "files.\n\nFiles, in the MovieLens 20M layout:\n"
        "  ratings.csv  userId,movieId,rating,timestamp (0.5..5.0 stars, epoch seconds UTC), "
        "sorted by userId, movieId\n"
        "  movies.csv   movieId,title,genres (pipe-separated MovieLens genres)\n\n"
        "Planted structure: each movie belongs to a latent cluster (its genres follow the "
        "cluster) and to a\ntheme of ~40 movies inside it; each user has an early and a late "
        "taste over clusters, the late\none gaining weight along the user's timeline. Ratings "
        "come in sessions that stick to a cluster\nand runs of a few ratings that stick to a "
        "theme; stars are higher where a movie's cluster matches\nthe user's taste "
        f"at the time.\n\nParameters: {json.dumps(asdict(p))}\n\n"
        f"Realised statistics:\n{json.dumps(release.stats, indent=2)}\n"
    )


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; give a folder path")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DataError(
            f"--out {out} exists and is not empty; pass --force to replace it or choose another folder"
        )


def synthesize(params: SynthParams, out: Path, force: bool = False) -> dict:
    """Generate a release and write it to ``out``: staged beside it, then renamed into place, so a
    failed run leaves no half release. Returns a summary (parameters, out, seconds, statistics).

    Raises ConfigError for impossible parameters, DataError if ``out`` is a file or a non-empty
    folder (unless ``force``, which replaces the folder).
    """
    params.check()
    out = Path(out).absolute()
    _check_out(out, force)
    started = time.perf_counter()
    release = generate(params)
    log.info("generated %d ratings in %.1f s", params.ratings, time.perf_counter() - started)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        staged.chmod(0o755)
        write_release(release, staged)
        swap_in(staged, out)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    seconds = round(time.perf_counter() - started, 1)
    log.info("wrote %s in %.1f s", out, seconds)
    return {"out": str(out), **asdict(params), "version": VERSION, "seconds": seconds, "stats": release.stats}
