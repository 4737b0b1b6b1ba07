"""The ratings: movies drawn by run, session, taste or popularity; repeats redrawn; stars from affinity."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd

from recsys.data.synth import metadata
from recsys.data.synth.catalogue import Catalogue, Release, Tastes, activity, catalogue, tastes, timeline
from recsys.data.synth.params import (
    AFFINITY_EFFECT,
    GROUP_FLATTEN,
    HALF_STARS_FROM,
    MODE_SHARES,
    REDRAW_ROUNDS,
    RUN_LENGTH,
    STAR_COUNTS,
    STARS,
    WHOLE_STAR_SHARES,
    SynthParams,
)

log = logging.getLogger(__name__)


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
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(params.seed).spawn(8)]
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
    names = metadata.Names(rngs[6], sampler.n_clusters, int(cat.themes.max() + 1))
    cat.titles = metadata.titles(rngs[6], names, cat.clusters, cat.themes, cat.years)
    tagged = metadata.tags(rngs[7], names, cat.clusters, cat.themes, movie[order], user[order] + 1,
                           timestamp[order])  # fmt: skip
    tags = {
        "user_id": tagged["user_id"],
        "movie_id": cat.movie_ids[tagged["movie"]],
        "tag": tagged["tag"],
        "timestamp": tagged["timestamp"],
    }
    stats = realised_stats(ratings, np.bincount(movie, minlength=params.movies), counts)
    structure = {"clusters": sampler.n_clusters, "themes": int(cat.themes.max() + 1)}
    tag_stats = {"tags": len(tags["tag"]), "tagged_movies": len(np.unique(tags["movie_id"]))}
    return Release(params, ratings, tags, cat, taste, {**stats, **structure, **tag_stats})


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
