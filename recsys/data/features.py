"""Item features from the catalogue alone: genre multi-hot, release decade and title words; what the
similar-movies item tower reads besides a movie's id (the model version stores none of it)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

_YEAR = re.compile(r"\((\d{4})\)\s*$")


_WORD = re.compile(r"[a-z0-9]+")


DECADES = tuple(range(1900, 2030, 10))  # decade buckets 1..len; 0: unknown or out of range


def title_year(title: str) -> int:
    """The release year in a MovieLens title ("Toy Story (1995)" -> 1995), -1 when it has none."""
    found = _YEAR.search(title or "")
    return int(found.group(1)) if found else -1


def title_words(title: str) -> list[str]:
    """Lower-case words of a title without its year: "Toy Story (1995)" -> ["toy", "story"]."""
    return _WORD.findall(_YEAR.sub("", title or "").lower())


@dataclass
class ItemFeatures:
    """Per catalogue row (item_idx order): genres [N, G] float32, decade [N] int64 (bucket, 0 =
    unknown), words [N, W] int64 (title-word ids 1..V, right-padded with 0)."""

    genres: np.ndarray
    decade: np.ndarray
    words: np.ndarray
    genre_names: list[str] = field(default_factory=list)
    vocabulary: list[str] = field(default_factory=list)

    @property
    def n_decades(self) -> int:
        return len(DECADES) + 1

    @property
    def n_words(self) -> int:
        return len(self.vocabulary) + 1


def item_features(catalogue: pd.DataFrame, title_min_count: int = 2, max_words: int = 8) -> ItemFeatures:
    """Features of each catalogue movie (item_idx order); title words seen fewer than
    ``title_min_count`` times in the catalogue are left out, at most ``max_words`` per title."""
    genres = catalogue["genres"].fillna("").astype(str).str.split("|")
    names = sorted({g for gs in genres for g in gs if g and g != "(no genres listed)"})
    position = {g: i for i, g in enumerate(names)}
    onehot = np.zeros((len(catalogue), max(len(names), 1)), dtype=np.float32)
    for row, gs in enumerate(genres):
        for g in gs:
            if g in position:
                onehot[row, position[g]] = 1.0
    titles = catalogue["title"].fillna("").astype(str).tolist()
    years = np.array([title_year(t) for t in titles])
    bucket = np.searchsorted(np.asarray(DECADES), years, side="right")
    decade = np.where((years >= DECADES[0]) & (years < DECADES[-1] + 10), bucket, 0).astype(np.int64)
    tokens = [title_words(t) for t in titles]
    counts: dict[str, int] = {}
    for ws in tokens:
        for w in set(ws):
            counts[w] = counts.get(w, 0) + 1
    vocabulary = sorted(w for w, c in counts.items() if c >= title_min_count)
    ids = {w: i + 1 for i, w in enumerate(vocabulary)}
    words = np.zeros((len(catalogue), max_words), dtype=np.int64)
    for row, ws in enumerate(tokens):
        kept = [ids[w] for w in dict.fromkeys(ws) if w in ids][:max_words]
        words[row, : len(kept)] = kept
    return ItemFeatures(onehot, decade, words, names, vocabulary)
