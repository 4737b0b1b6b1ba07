"""What a synthetic release says about its movies besides genres and years: titles whose words
follow the movie's cluster and theme, and user tags (tags.csv) drawn from the same structure.

Each cluster has a pool of made-up words (:data:`CLUSTER_WORDS`) and of tags
(:data:`CLUSTER_TAGS`); each theme (a franchise) has a name of its own. A title mixes the theme's
name, a word of its cluster and common English words that carry nothing ("The Last ..."); a tag
is a cluster's tag, the theme's name or a tag anyone gives any movie ("dvd", "seen it"). So a
content item tower can place a movie it never trained by what it is called and how it is tagged,
about as well as real titles and tags allow, and no better: every part is noisy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys.data.synth.params import (
    CLUSTER_TAGS,
    CLUSTER_WORDS,
    END,
    FILLER_WORDS,
    GENERIC_TAGS,
    TAG_DELAY_S,
    TAG_RATE,
    TAG_SHARES,
    TAGGER_SHARE,
    TITLE_SHARES,
)

_CONSONANTS, _VOWELS = "bdfgklmnprstvz", "aeiou"


def pseudo_words(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    """``n`` distinct made-up words of 2-3 consonant-vowel syllables, none of them in ``taken``
    (which grows by them)."""
    out: list[str] = []
    while len(out) < n:
        size = n - len(out)
        length = rng.integers(2, 4, size)
        cons = rng.integers(0, len(_CONSONANTS), (size, 3))
        vows = rng.integers(0, len(_VOWELS), (size, 3))
        for row in range(size):
            word = "".join(_CONSONANTS[cons[row, j]] + _VOWELS[vows[row, j]] for j in range(length[row]))
            if word not in taken:
                taken.add(word)
                out.append(word)
    return out


class Names:
    """The made-up vocabulary of a catalogue: per cluster, title words and tags; per theme, a name."""

    def __init__(self, rng: np.random.Generator, n_clusters: int, n_themes: int) -> None:
        taken = set(FILLER_WORDS) | {w for tag in GENERIC_TAGS for w in tag.split()}
        self.words = np.array(pseudo_words(rng, n_clusters * CLUSTER_WORDS, taken)).reshape(n_clusters, -1)
        self.tags = np.array(pseudo_words(rng, n_clusters * CLUSTER_TAGS, taken)).reshape(n_clusters, -1)
        self.themes = np.array(pseudo_words(rng, n_themes, taken))


def _zipf(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Indices in [0, n) drawn with weight 1 / (rank + 1): a pool's first entries are its common ones."""
    p = 1.0 / np.arange(1, n + 1)
    return rng.choice(n, size=size, p=p / p.sum())


def titles(
    rng: np.random.Generator, names: Names, clusters: np.ndarray, themes: np.ndarray, years: np.ndarray
) -> list[str]:
    """A title per movie, "Word Word ... (year)": with the shares of :data:`TITLE_SHARES`, a
    leading common word, the theme's name (then, sometimes, a sequel number) and a word of the
    cluster (else a second common word)."""
    n = len(clusters)
    lead, theme, cluster, sequel = rng.random((4, n)) < np.array(TITLE_SHARES)[:, None]
    fillers = np.array(FILLER_WORDS)[_zipf(rng, len(FILLER_WORDS), 2 * n)].reshape(2, n)
    word = names.words[clusters, _zipf(rng, CLUSTER_WORDS, n)]
    numbers = rng.integers(2, 6, n)
    out = []
    for i in range(n):
        parts = [fillers[0, i]] if lead[i] else []
        if theme[i]:
            parts.append(names.themes[themes[i]])
        parts.append(word[i] if cluster[i] or not parts else fillers[1, i])
        if theme[i] and sequel[i]:
            parts.append(str(numbers[i]))
        out.append(f"{' '.join(p.capitalize() for p in parts)} ({years[i]})")
    return out


def tags(
    rng: np.random.Generator,
    names: Names,
    clusters: np.ndarray,
    themes: np.ndarray,
    movie: np.ndarray,
    user: np.ndarray,
    timestamp: np.ndarray,
) -> dict[str, np.ndarray]:
    """tags.csv's rows (user_id, movie index, tag, timestamp; sorted by user, movie, timestamp,
    tag) from the ratings (movie indices [R], user ids [R], timestamps [R]).

    As in ml-20m, a few users tag (:data:`TAGGER_SHARE`), about :data:`TAG_RATE` tags per rating
    in all, each a while after the rating it is on: a tag of the movie's cluster (Zipf over its
    pool), the theme's name or a generic tag, by :data:`TAG_SHARES`; a user gives a movie one tag
    at most once.
    """
    n_users = int(user.max()) + 1 if len(user) else 0
    taggers = rng.random(n_users) < TAGGER_SHARE
    rows = np.flatnonzero(taggers[user])
    rate = min(1.0, TAG_RATE * len(user) / max(len(rows), 1))
    rows = rows[rng.random(len(rows)) < rate]
    m = movie[rows]
    kind = np.searchsorted(np.cumsum(TAG_SHARES), rng.random(len(rows)) * sum(TAG_SHARES), side="right")
    text = np.where(
        kind == 0,
        names.tags[clusters[m], _zipf(rng, CLUSTER_TAGS, len(rows))],
        np.where(
            kind == 1,
            names.themes[themes[m]],
            np.array(GENERIC_TAGS)[_zipf(rng, len(GENERIC_TAGS), len(rows))],
        ),
    )
    delay = np.floor(rng.lognormal(np.log(TAG_DELAY_S), 1.0, len(rows))).astype(np.int64)
    when = np.minimum(timestamp[rows] + delay, END - 1)
    frame = pd.DataFrame({"user_id": user[rows], "movie": m, "tag": text, "timestamp": when})
    frame = frame.sort_values(["user_id", "movie", "timestamp", "tag"], kind="mergesort")
    frame = frame.drop_duplicates(["user_id", "movie", "tag"])  # one (user, movie, tag): the earliest
    return {name: frame[name].to_numpy() for name in frame.columns}
