"""Item features from the catalogue alone: genre multi-hot, release decade, title words and user
tags; what the content-aware item towers read besides a movie's id.

A :class:`Vocabulary` is fitted once on a training catalogue (the genres, words and tags it will
know) and then encodes any catalogue, today's included: a word or tag it never saw is left out,
so a movie that arrived after training still gets its genres, decade and known words. The two-tower
model version stores its vocabulary (:meth:`Vocabulary.as_dict`), the similar-movies tower refits
one per training.

A catalogue frame has columns ``title`` and ``genres`` (pipe-separated) and, optionally, ``tags``
(pipe-separated, as :func:`movie_tags` writes them; missing or empty: no tags).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

_YEAR = re.compile(r"\((\d{4})\)\s*$")
_WORD = re.compile(r"[a-z0-9]+")
NO_GENRES = "(no genres listed)"
DECADES = tuple(range(1900, 2030, 10))  # decade buckets 1..len; 0: unknown or out of range
FEATURE_INPUTS = ("genres", "decade", "words", "tags", "year")  # what a content item tower reads


def title_year(title: str) -> int:
    """The release year in a MovieLens title ("Toy Story (1995)" -> 1995), -1 when it has none."""
    found = _YEAR.search(title or "")
    return int(found.group(1)) if found else -1


def title_words(title: str) -> list[str]:
    """Lower-case words of a title without its year: "Toy Story (1995)" -> ["toy", "story"]."""
    return _WORD.findall(_YEAR.sub("", title or "").lower())


def normal_tag(tag: str) -> str:
    """A tag as the vocabulary keys it: lower case, inner spaces collapsed, no pipes."""
    return " ".join(str(tag).lower().replace("|", " ").split())


def movie_tags(tags: pd.DataFrame, max_tags: int = 16) -> pd.Series:
    """Per movie_id, its tags as one pipe-separated string: the ``max_tags`` given by most users
    (ties alphabetical), from a frame with columns movie_id and tag (tags.csv's rows)."""
    if tags.empty:
        return pd.Series(dtype=str, name="tags")
    frame = pd.DataFrame({"movie_id": tags["movie_id"].to_numpy(), "tag": tags["tag"].map(normal_tag)})
    frame = frame[frame["tag"] != ""]
    counts = frame.groupby(["movie_id", "tag"]).size().rename("n").reset_index()
    counts = counts.sort_values(["movie_id", "n", "tag"], ascending=[True, False, True], kind="mergesort")
    top = counts.groupby("movie_id").head(max_tags)
    return top.groupby("movie_id")["tag"].agg("|".join).rename("tags")


def _split(values: pd.Series, none: str = "") -> list[list[str]]:
    return [[v for v in str(s).split("|") if v and v != none] for s in values.fillna("").astype(str)]


@dataclass(frozen=True)
class Vocabulary:
    """What an item tower knows how to read: genre names, title words and tags (ids 1.. in list
    order; 0 is padding or unknown), and how many words and tags a movie keeps."""

    genres: tuple[str, ...]
    words: tuple[str, ...]
    tags: tuple[str, ...] = ()
    max_words: int = 8
    max_tags: int = 16

    @classmethod
    def fit(cls, catalogue: pd.DataFrame, min_count: int = 2, max_words: int = 8,
            max_tags: int = 16) -> Vocabulary:  # fmt: skip
        """Every genre of ``catalogue``; the title words and tags of at least ``min_count`` of its
        movies (a feature of one movie says nothing about any other)."""
        genres = sorted({g for gs in _split(catalogue["genres"], NO_GENRES) for g in gs})
        words = Counter(w for t in catalogue["title"].fillna("").astype(str) for w in set(title_words(t)))
        tag_lists = _split(catalogue["tags"]) if "tags" in catalogue else []
        tags = Counter(t for ts in tag_lists for t in set(ts))
        return cls(
            tuple(genres),
            tuple(sorted(w for w, c in words.items() if c >= min_count)),
            tuple(sorted(t for t, c in tags.items() if c >= min_count)),
            max_words,
            max_tags,
        )

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        """The vocabulary :meth:`as_dict` wrote (a model version's ``vocabulary.json``)."""
        return cls(
            tuple(data["genres"]),
            tuple(data["words"]),
            tuple(data.get("tags", ())),
            int(data.get("max_words", 8)),
            int(data.get("max_tags", 16)),
        )

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def encode(self, catalogue: pd.DataFrame) -> ItemFeatures:
        """The features of each row of ``catalogue`` (row order)."""
        n = len(catalogue)
        position = {g: i for i, g in enumerate(self.genres)}
        onehot = np.zeros((n, max(len(self.genres), 1)), dtype=np.float32)
        for row, gs in enumerate(_split(catalogue["genres"], NO_GENRES)):
            for g in gs:
                if g in position:
                    onehot[row, position[g]] = 1.0
        titles = catalogue["title"].fillna("").astype(str).tolist()
        years = np.array([title_year(t) for t in titles], dtype=np.int64).reshape(n)
        bucket = np.searchsorted(np.asarray(DECADES), years, side="right")
        decade = np.where((years >= DECADES[0]) & (years < DECADES[-1] + 10), bucket, 0).astype(np.int64)
        words = _ids([title_words(t) for t in titles], self.words, self.max_words)
        tag_lists = _split(catalogue["tags"]) if "tags" in catalogue else [[] for _ in range(n)]
        tags = _ids(tag_lists, self.tags, self.max_tags)
        return ItemFeatures(onehot, decade, words, list(self.genres), list(self.words), tags, list(self.tags),
                            recency(years))  # fmt: skip


def recency(years: np.ndarray) -> np.ndarray:
    """Release years as one number the model can extrapolate: decades from 2000, 0 when unknown
    (a movie newer than every trained one still lands at its end of the scale): [N, 1] float32."""
    known = years > 0
    return np.where(known, (years - 2000) / 10.0, 0.0).astype(np.float32).reshape(-1, 1)


def _ids(lists: list[list[str]], vocabulary: tuple[str, ...], width: int) -> np.ndarray:
    """Each list's known entries as ids 1..V (first ``width``, no repeats), right-padded with 0."""
    ids = {w: i + 1 for i, w in enumerate(vocabulary)}
    out = np.zeros((len(lists), width), dtype=np.int64)
    for row, entries in enumerate(lists):
        kept = [ids[w] for w in dict.fromkeys(entries) if w in ids][:width]
        out[row, : len(kept)] = kept
    return out


@dataclass
class ItemFeatures:
    """Per catalogue row: genres [N, G] float32, decade [N] int64 (bucket, 0 = unknown), words
    [N, W] and tags [N, T] int64 (ids 1..V, right-padded with 0), year [N, 1] float32."""

    genres: np.ndarray
    decade: np.ndarray
    words: np.ndarray
    genre_names: list[str] = field(default_factory=list)
    vocabulary: list[str] = field(default_factory=list)
    tags: np.ndarray | None = None
    tag_vocabulary: list[str] = field(default_factory=list)
    year: np.ndarray | None = None  # [N, 1] float32 (:func:`recency`)

    def arrays(self) -> list[np.ndarray]:
        """:data:`FEATURE_INPUTS` in order, with the dtypes the item towers read."""
        n = len(self.decade)
        tags = self.tags if self.tags is not None else np.zeros((n, 1), np.int64)
        year = self.year if self.year is not None else np.zeros((n, 1), np.float32)
        return [
            self.genres.astype(np.float32),
            self.decade.astype(np.int64),
            self.words.astype(np.int64),
            tags.astype(np.int64),
            year.astype(np.float32),
        ]

    @property
    def n_decades(self) -> int:
        return len(DECADES) + 1

    @property
    def n_words(self) -> int:
        return len(self.vocabulary) + 1

    @property
    def n_tags(self) -> int:
        return len(self.tag_vocabulary) + 1


def item_features(catalogue: pd.DataFrame, title_min_count: int = 2, max_words: int = 8) -> ItemFeatures:
    """Features of each catalogue movie with a vocabulary fitted on the catalogue itself (title
    words seen fewer than ``title_min_count`` times left out, at most ``max_words`` per title)."""
    return Vocabulary.fit(catalogue, title_min_count, max_words).encode(catalogue)
