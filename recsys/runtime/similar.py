"""A registered ``movie_similar`` version as its consumers see it, without torch, and the nightly
lists it gives.

- :class:`SimilarBundle`: ``similar.onnx`` (item_idx [B] -> the top-K other movies' item_idx [B, K]
  and scores [B, K], best first; the query itself is masked inside the graph),
  ``item_vectors.npy``, ``catalogue.parquet`` and ``bundle.json``;
- :func:`score_similar`: every catalogue movie's top-K list through that graph with ONNX Runtime;
- :func:`check_similar`: the lists' invariants (K per movie, no self, no repeats, sorted).

Scores are similarities, higher is closer: cos(a, b) for the cosine distance, -||a - b|| for L2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.errors import DataError
from recsys.files import read_parquet
from recsys.runtime.onnx import DAMAGED, session

FORMAT = "movie_similar-1"  # bundle.json "format" of a movie_similar version
BUNDLE_FILE = "bundle.json"
FILES = ("similar.onnx", "item_vectors.npy", "catalogue.parquet", BUNDLE_FILE)
SIMILAR_COLUMNS = ("movie_id", "movie_ids", "scores", "model_version", "data_version")


# --- quality ---------------------------------------------------------------------------------


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
        return session(self.folder / "similar.onnx", self.threads)

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
