"""A registered ``movie_similar`` version as its consumers see it, without torch, and the nightly
lists it gives.

- :class:`SimilarBundle`: ``similar.onnx`` ((query vectors [B, D], each query's own row in the
  candidate table or -1 [B], the candidate table [C, D]) -> the top-K candidates' rows [B, K] and
  scores [B, K], best first; the query itself is masked inside the graph), ``item_tower.onnx`` (a
  movie's features -> its vector, for a movie without a trained id), ``vocabulary.json``,
  ``item_vectors.npy`` (the trained catalogue's vectors), ``rare_movies.npy``, ``catalogue.parquet``
  and ``bundle.json``;
- :meth:`SimilarBundle.with_movies`: tonight's catalogue, every movie of ``movies.csv``: those the
  version was not trained on are embedded from their genres, year, title words and tags, with no
  retrain. Each gets a list. Candidates are the trained movies and the movies new since training
  (in a trained movie's list only when it is in theirs: :func:`score_similar`); the rare ones
  (rated in the training data, too rarely to be trained: ``rare_movies.npy``) are not recommended
  as similar to anything: rarely liked, embedded from their features they crowd the lists
  (benchmarks/similar.py: the trained movies' test Recall@10 falls from 0.157 to 0.081 with every
  movie a candidate);
- :func:`score_similar`: every catalogue movie's top-K list through that graph with ONNX Runtime,
  with its source: ``collaborative`` for a movie the version was trained on (its id vector, learnt
  from what its fans liked), ``content`` for one embedded from its features alone;
- :func:`check_similar`: the lists' invariants (K per movie, no self, no repeats, sorted).

Scores are similarities, higher is closer: cos(a, b) for the cosine distance, -||a - b|| for L2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.data.features import NO_GENRES
from recsys.errors import DataError
from recsys.files import read_parquet
from recsys.runtime.content import (
    COLLABORATIVE,
    CONTENT,
    ITEM_TOWER_FILE,
    RARE_FILE,
    VOCABULARY_FILE,
    embed_movies,
    read_rare,
)
from recsys.runtime.onnx import DAMAGED, session
from recsys.runtime.two_tower import ITEM_TABLE

FORMAT = "movie_similar-2"  # bundle.json "format" of a movie_similar version
BUNDLE_FILE = "bundle.json"
GRAPH_FILE = "similar.onnx"
VECTORS_FILE = "item_vectors.npy"
FILES = (
    GRAPH_FILE,
    ITEM_TOWER_FILE,
    VOCABULARY_FILE,
    VECTORS_FILE,
    RARE_FILE,
    "catalogue.parquet",
    BUNDLE_FILE,
)
GRAPH_INPUTS = ("query", "query_row", ITEM_TABLE)  # similar.onnx's inputs
SIMILAR_COLUMNS = ("movie_id", "movie_ids", "scores", "source", "model_version", "data_version")


@dataclass
class SimilarBundle:
    """A loaded ``movie_similar`` version (see the module docstring); use :meth:`load`.

    ``catalogue`` and ``vectors``: the trained movies (item_idx 0..n_trained-1), then, after
    :meth:`with_movies`, tonight's movies embedded from their features."""

    folder: Path
    k: int
    distance: str
    catalogue: pd.DataFrame
    meta: dict[str, Any]
    vectors: np.ndarray
    rare: np.ndarray  # movie ids that get a list but are no candidate (the module docstring)
    threads: int | None = None

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None) -> SimilarBundle:
        """Read a bundle folder; DataError naming a missing file, bad JSON or another format."""
        folder = Path(folder)
        missing = [name for name in FILES if not (folder / name).is_file()]
        if missing:
            raise DataError(
                f"movie_similar bundle {folder} lacks {missing}; retrain the similar-movies model"
            )
        try:
            meta = json.loads((folder / BUNDLE_FILE).read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{folder / BUNDLE_FILE} is not valid JSON ({exc}); {DAMAGED}") from exc
        if meta.get("format") != FORMAT:
            raise DataError(
                f"bundle {folder} has format {meta.get('format')!r}, not {FORMAT!r}: it is not a "
                "movie_similar version of this recsys; retrain the similar-movies model"
            )
        catalogue = read_parquet(folder / "catalogue.parquet", fix=DAMAGED).sort_values("item_idx")
        try:
            vectors = np.load(folder / VECTORS_FILE).astype(np.float32)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {folder / VECTORS_FILE} ({exc}); {DAMAGED}") from exc
        rare = read_rare(folder)
        if vectors.ndim != 2 or len(vectors) != len(catalogue):
            raise DataError(f"{folder / VECTORS_FILE} does not match the catalogue; {DAMAGED}")
        return cls(
            folder,
            int(meta["k"]),
            str(meta["distance"]),
            catalogue.reset_index(drop=True),
            meta,
            vectors,
            rare,
            threads,
        )

    @property
    def n_items(self) -> int:
        return len(self.catalogue)

    @property
    def n_trained(self) -> int:
        """Movies the version was trained on: item_idx below this have a trained id."""
        return int(self.meta["n_items"])

    @cached_property
    def movie_ids(self) -> np.ndarray:
        return self.catalogue["movie_id"].to_numpy(dtype=np.int64)

    @cached_property
    def session(self) -> Any:
        return session(self.folder / GRAPH_FILE, self.threads)

    def item_index(self, movie_ids: np.ndarray) -> np.ndarray:
        """movie ids -> item_idx, -1 for a movie this catalogue does not hold."""
        return pd.Index(self.movie_ids).get_indexer(np.asarray(movie_ids, dtype=np.int64))

    def sources(self, item_idx: np.ndarray) -> np.ndarray:
        """Each movie's list source: :data:`COLLABORATIVE` (a trained id) or :data:`CONTENT`."""
        return np.where(np.asarray(item_idx) < self.n_trained, COLLABORATIVE, CONTENT)

    def with_movies(self, movies: pd.DataFrame) -> SimilarBundle:
        """Tonight's bundle: the catalogue grown by every movie of ``movies`` (movie_id, title,
        genres, optionally tags) the version was not trained on, each embedded from its features
        by ``item_tower.onnx``, with no retrain."""
        new = movies[~movies["movie_id"].isin(self.movie_ids)].sort_values("movie_id", kind="mergesort")
        if new.empty:
            return self
        n = self.n_items
        added = new.assign(item_idx=np.arange(n, n + len(new)), train_count=0)
        vectors = np.vstack([self.vectors, self.embed(added)]).astype(np.float32)
        columns = list(self.catalogue.columns)
        catalogue = pd.concat([self.catalogue, added[[c for c in columns if c in added]]], ignore_index=True)
        if "genres" in catalogue:
            catalogue["genres"] = catalogue["genres"].fillna(NO_GENRES)
        return replace(self, catalogue=catalogue, vectors=vectors)

    def embed(self, movies: pd.DataFrame) -> np.ndarray:
        """Vectors of ``movies`` from their features alone (no trained id): [M, D]."""
        return embed_movies(self.folder, movies, self.n_trained, self.threads)

    @cached_property
    def candidates(self) -> np.ndarray:
        """item_idx of the movies a list may hold: all but the rare ones."""
        return np.flatnonzero(~np.isin(self.movie_ids, self.rare))

    @cached_property
    def fresh(self) -> np.ndarray:
        """item_idx of the candidates without a trained id: the movies new since training."""
        return self.candidates[self.candidates >= self.n_trained]

    def similar(
        self, item_idx: np.ndarray, candidates: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-K other movies of each query among ``candidates`` (item_idx, default
        :attr:`candidates`): item_idx [B] -> (item_idx [B, K], scores [B, K])."""
        candidates = self.candidates if candidates is None else candidates
        item_idx = np.asarray(item_idx, dtype=np.int64)
        row = pd.Index(candidates).get_indexer(item_idx)
        query, own, table = GRAPH_INPUTS
        feeds = {query: self.vectors[item_idx], own: row, table: self.vectors[candidates]}
        rows, scores = self.session.run(["similar_idx", "scores"], feeds)
        return candidates[rows], scores


def _ranked(bundle: SimilarBundle, queries: np.ndarray, candidates: np.ndarray, batch: int) -> list:
    parts = [bundle.similar(queries[i : i + batch], candidates) for i in range(0, len(queries), batch)]
    return [(items, scores) for idx, sc in parts for items, scores in zip(idx, sc)]


def score_similar(
    bundle: SimilarBundle, version: str, data_version: str, batch: int = 512, fresh_slots: int = 1
) -> pd.DataFrame:
    """Every catalogue movie's top-K similar movies: one row per movie with columns
    :data:`SIMILAR_COLUMNS` plus ``event_timestamp`` (the run's time, UTC).

    Every list is the movie's top-K among the trained movies, but a movie new since training
    (:attr:`SimilarBundle.fresh`), whose own list is its top-K among every candidate, is offered
    to the movies in its own list, with the same score (a distance is symmetric): it enters where
    it beats their last, else it may take one of their last ``fresh_slots`` places (the best offers
    first, while the list holds fewer new movies than that). Embedded from its features alone, a
    new movie sits close to many movies (a hub: in the DAG test one was among the 20 nearest of
    over 2,000 movies), and farther than their trained neighbours: so it is listed beside its own
    nearest only, and there from its first night."""
    everyone = np.arange(bundle.n_items)
    fresh = bundle.fresh
    lists = _ranked(bundle, everyone, np.arange(bundle.n_trained), batch)
    for movie, (items, scores) in zip(fresh, _ranked(bundle, fresh, bundle.candidates, batch)):
        lists[movie] = (items, scores)
    offers: dict[int, list[tuple[float, int]]] = {}
    for movie in fresh.tolist():
        for other, score in zip(*lists[movie]):
            items, scores = lists[other]
            if movie in items:
                continue
            if score > scores[-1]:
                at = int(np.searchsorted(-scores, -score, side="right"))
                lists[other] = (np.insert(items, at, movie)[:-1], np.insert(scores, at, score)[:-1])
            else:
                offers.setdefault(int(other), []).append((float(score), movie))
    is_fresh = np.zeros(bundle.n_items, dtype=bool)
    is_fresh[fresh] = True
    for other, offered in offers.items():
        items, scores = lists[other]
        room = min(fresh_slots, len(items)) - int(is_fresh[items].sum())
        taken = sorted(offered, reverse=True)[: max(room, 0)]
        if taken:  # in place of the last trained movies, then best first again
            dropped = np.flatnonzero(~is_fresh[items])[-len(taken) :]
            keep = np.setdiff1d(np.arange(len(items)), dropped)
            merged_items = np.concatenate([items[keep], [m for _, m in taken]]).astype(items.dtype)
            merged_scores = np.concatenate([scores[keep], [v for v, _ in taken]]).astype(scores.dtype)
            order = np.argsort(-merged_scores, kind="stable")
            lists[other] = (merged_items[order], merged_scores[order])
    movie_ids = bundle.movie_ids
    return pd.DataFrame(
        {
            "movie_id": movie_ids,
            "movie_ids": [movie_ids[items] for items, _ in lists],
            "scores": [np.asarray(scores, dtype=np.float32) for _, scores in lists],
            "source": bundle.sources(np.arange(bundle.n_items)),
            "model_version": str(version),
            "data_version": str(data_version),
            "event_timestamp": pd.Timestamp.now(tz="UTC"),
        }
    )


def check_similar(lists: pd.DataFrame, k: int) -> None:
    """Refuse (DataError naming the first bad movie) lists that are not ``k`` distinct other movies
    with finite scores, best first, one row per movie."""
    missing = [c for c in SIMILAR_COLUMNS if c not in lists.columns]
    if missing:
        raise DataError(f"similar-movies frame lacks column(s) {missing}; expected {list(SIMILAR_COLUMNS)}")
    if lists["movie_id"].duplicated().any():
        raise DataError("similar-movies frame holds a movie twice; one row per movie")
    odd = lists.loc[~lists["source"].isin((COLLABORATIVE, CONTENT)), "movie_id"]
    if len(odd):
        raise DataError(
            f"similar movies of movie {odd.iat[0]} have source {lists.loc[odd.index[0], 'source']!r}, "
            f"not {COLLABORATIVE!r} or {CONTENT!r}; score them again"
        )
    for movie, items, scores in zip(lists["movie_id"], lists["movie_ids"], lists["scores"]):
        items, scores = np.asarray(items), np.asarray(scores, dtype=np.float64)
        problem = None
        if len(items) != k or len(scores) != k:
            problem = f"holds {len(items)} movies and {len(scores)} scores, not {k}"
        elif (items == movie).any():
            problem = "lists the movie itself"
        elif len(np.unique(items)) != k:
            problem = "lists a movie twice"
        elif not np.isfinite(scores).all() or (np.diff(scores) > 1e-6).any():
            problem = "has scores that are not finite or not best first"
        if problem:
            raise DataError(f"similar movies of movie {movie} {problem}; score them again")
