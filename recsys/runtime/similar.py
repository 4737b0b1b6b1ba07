"""Similar movies without torch: item features, the quality metrics, the model version's bundle and
the nightly top-K lists.

- :func:`item_features`: what the item tower reads besides the id (genre multi-hot, decade, title
  words), from the catalogue alone, so the bundle can rebuild nothing and serving needs no torch;
- :func:`similarity_metrics`: Recall@K of a query's positives among all movies (the query itself
  left out) and AUC of its positives against its hard and its soft negatives, per query, averaged
  over the queries of one split;
- :class:`SimilarBundle`: a registered ``movie_similar`` version as its consumers see it:
  ``similar.onnx`` (item_idx [B] -> the top-K other movies' item_idx [B, K] and scores [B, K],
  best first; the query itself is masked inside the graph), ``item_vectors.npy``,
  ``catalogue.parquet`` and ``bundle.json``;
- :func:`score_similar`: every catalogue movie's top-K list through that graph with ONNX Runtime.

Scores are similarities, higher is closer: cos(a, b) for the cosine distance, -||a - b|| for L2.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.errors import DataError
from recsys.files import read_parquet
from recsys.runtime.two_tower import DAMAGED, _session

FORMAT = "movie_similar-1"  # bundle.json "format" of a movie_similar version
BUNDLE_FILE = "bundle.json"
FILES = ("similar.onnx", "item_vectors.npy", "catalogue.parquet", BUNDLE_FILE)
KS = (10, 50)
SIMILAR_COLUMNS = ("movie_id", "movie_ids", "scores", "model_version", "data_version")
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


# --- quality ---------------------------------------------------------------------------------


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half."""
    order = np.sort(neg)
    below = np.searchsorted(order, pos, side="left")
    ties = np.searchsorted(order, pos, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(pos) * len(neg)))


def similarity_metrics(
    scores_of: Any, pairs: pd.DataFrame, movie_ids: np.ndarray, ks: tuple[int, ...] = KS
) -> dict[str, float]:
    """Recall@K and AUCs of one split's queries (see the module docstring).

    ``scores_of(rows)`` -> [len(rows), N] similarities of the catalogue rows ``rows`` to every
    catalogue movie; ``pairs``: the table's rows of one split; ``movie_ids``: catalogue movie id per
    row. Recall@K of a query = its positives ranked below K (itself left out) / its positives, ties
    with other movies broken at random (the expected value is counted).
    A pair whose movie the catalogue lacks counts as a miss (a positive) or is dropped (a negative).
    """
    index = pd.Index(movie_ids)
    rows = index.get_indexer(pairs["movie_id_first"].to_numpy())
    others = index.get_indexer(pairs["movie_id_second"].to_numpy())
    kinds = pairs["kind"].to_numpy()
    queries = np.unique(rows[rows >= 0])
    recalls: dict[int, list[float]] = {k: [] for k in ks}
    aucs: dict[str, list[float]] = {"hard_negative": [], "soft_negative": []}
    by_query = pd.Series(np.arange(len(rows))).groupby(rows).indices
    for start in range(0, len(queries), 256):
        chunk = queries[start : start + 256]
        scores = np.asarray(scores_of(chunk), dtype=np.float64)
        for r, q in enumerate(chunk.tolist()):
            s = scores[r].copy()
            s[q] = -np.inf
            members = by_query[q]
            pos = others[members][kinds[members] == "positive"]
            if not len(pos):
                continue
            known = pos[pos >= 0]
            # a hit counts P(rank < K) when ties are broken at random: (K - movies scoring higher) /
            # (movies scoring the same + 1), clipped to 0..1; the query itself is excluded
            if len(known):
                higher = (s[None, :] > s[known][:, None]).sum(1)
                ties = (s[None, :] == s[known][:, None]).sum(1) - 1
            else:
                higher = ties = np.empty(0)
            for k in ks:  # P(rank < k) when the tied movies are put in a random order
                recalls[k].append(float(np.clip((k - higher) / (ties + 1), 0, 1).sum()) / len(pos))
            for kind in aucs:
                neg = others[members][(kinds[members] == kind) & (others[members] >= 0)]
                if len(neg) and len(known):
                    aucs[kind].append(_auc(s[known], s[neg]))
    out = {f"recall_at_{k}": float(np.mean(v)) if v else 0.0 for k, v in recalls.items()}
    out["auc_hard"] = float(np.mean(aucs["hard_negative"])) if aucs["hard_negative"] else 0.0
    out["auc_soft"] = float(np.mean(aucs["soft_negative"])) if aucs["soft_negative"] else 0.0
    out["queries"] = float(len(recalls[ks[0]]))
    return out


def vector_scores(vectors: np.ndarray, distance: str) -> Any:
    """``scores_of`` for :func:`similarity_metrics` from item vectors [N, D]: cos(a, b) for
    ``cosine`` (vectors normalised here), -||a - b|| for ``l2``, a . b for ``dot``."""
    v = np.asarray(vectors, dtype=np.float32)
    if distance == "l2":  # translation-invariant; centred, float32 stays exact (item_tower.distances)
        v = v - v.mean(0, keepdims=True)
    if distance == "cosine":
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    norms = (v * v).sum(1)

    def scores_of(rows: np.ndarray) -> np.ndarray:
        dots = v[rows] @ v.T
        if distance == "l2":
            return -np.sqrt(np.maximum(norms[rows][:, None] + norms[None, :] - 2 * dots, 0.0))
        return dots

    return scores_of


def align_vectors(vectors: np.ndarray, their_ids: np.ndarray, movie_ids: np.ndarray) -> np.ndarray:
    """Rows of ``vectors`` (one per movie of ``their_ids``) reordered to ``movie_ids``; a movie they
    lack gets a row of NaN. Raises ValueError when the two lengths disagree."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(their_ids):
        raise ValueError(f"{vectors.shape} vectors for {len(their_ids)} movie ids")
    where = pd.Index(np.asarray(their_ids)).get_indexer(np.asarray(movie_ids))
    out = np.full((len(movie_ids), vectors.shape[1]), np.nan, dtype=np.float32)
    out[where >= 0] = vectors[where[where >= 0]]
    return out


# --- the model version -----------------------------------------------------------------------


@dataclass
class SimilarBundle:
    """A loaded ``movie_similar`` version (see the module docstring); use :meth:`load`."""

    folder: Path
    k: int
    distance: str
    catalogue: pd.DataFrame
    meta: dict[str, Any]
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
        return cls(
            folder, int(meta["k"]), str(meta["distance"]), catalogue.reset_index(drop=True), meta, threads
        )

    @property
    def n_items(self) -> int:
        return len(self.catalogue)

    @cached_property
    def movie_ids(self) -> np.ndarray:
        return self.catalogue["movie_id"].to_numpy(dtype=np.int64)

    @cached_property
    def session(self) -> Any:
        return _session(self.folder / "similar.onnx", self.threads)

    def item_index(self, movie_ids: np.ndarray) -> np.ndarray:
        """movie ids -> item_idx, -1 for a movie this version does not know."""
        return pd.Index(self.movie_ids).get_indexer(np.asarray(movie_ids, dtype=np.int64))

    def similar(self, item_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-K other movies of each query: item_idx [B] -> (item_idx [B, K], scores [B, K])."""
        feeds = {"item_idx": np.asarray(item_idx, dtype=np.int64)}
        items, scores = self.session.run(["similar_idx", "scores"], feeds)
        return items, scores


def score_similar(bundle: SimilarBundle, version: str, data_version: str, batch: int = 512) -> pd.DataFrame:
    """Every catalogue movie's top-K similar movies: one row per movie with columns
    :data:`SIMILAR_COLUMNS` plus ``event_timestamp`` (the run's time, UTC)."""
    movie_ids = bundle.movie_ids
    items, scores = [], []
    for start in range(0, bundle.n_items, batch):
        idx, sc = bundle.similar(np.arange(start, min(start + batch, bundle.n_items)))
        items.append(idx)
        scores.append(sc)
    top = np.concatenate(items) if items else np.empty((0, bundle.k), dtype=np.int64)
    values = np.concatenate(scores) if scores else np.empty((0, bundle.k), dtype=np.float32)
    return pd.DataFrame(
        {
            "movie_id": movie_ids,
            "movie_ids": list(movie_ids[top]),
            "scores": list(values.astype(np.float32)),
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
