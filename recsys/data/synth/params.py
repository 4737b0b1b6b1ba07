"""The generator's parameters: ml-20m's measured shape as constants, and the presets."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from recsys.errors import ConfigError

log = logging.getLogger(__name__)

VERSION = "2"  # bump whenever the same parameters and seed would give other files
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
# Titles and tags (recsys.data.synth.metadata): made-up words per cluster, a name per theme
CLUSTER_WORDS, CLUSTER_TAGS = 10, 6  # title words and tags of each cluster's pool
TITLE_SHARES = (0.35, 0.6, 0.8, 0.15)  # a title's leading common word, theme name, cluster word,
# sequel number (after a theme name)
FILLER_WORDS = (
    "the", "of", "a", "last", "night", "love", "man", "day", "story", "king", "city", "dark",
    "life", "world", "girl", "home", "war", "blood", "house", "time", "dead", "little", "big",
    "lost", "secret", "black", "red", "summer", "star", "road", "game", "heart", "dream", "ghost",
    "island", "river", "moon", "fire", "family", "return", "american", "first", "new", "old",
)  # fmt: skip
GENERIC_TAGS = (
    "seen it", "dvd", "netflix queue", "classic", "atmospheric", "funny", "boring", "overrated",
    "based on a book", "twist ending", "good soundtrack", "slow", "predictable", "must see",
    "favorite", "great acting", "cult film", "visually appealing", "dialogue", "bd-r",
)  # fmt: skip
TAG_RATE = 465_564 / 20_000_263  # ml-20m: tags per rating
TAGGER_SHARE = 7_801 / 138_493  # ml-20m: users who tag at all
TAG_SHARES = (0.5, 0.25, 0.25)  # a tag from the movie's cluster pool, its theme's name, generic
TAG_DELAY_S = 600.0  # median seconds from a rating to a tag on it


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
