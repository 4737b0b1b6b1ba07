"""What both models' versions hold to serve movies they were not trained on, and how it is read.

- ``item_tower.onnx`` (:data:`ITEM_INPUTS` -> ``item_vectors``) with ``vocabulary.json``
  (recsys.data.features.Vocabulary): :func:`embed_movies` gives a movie its vector from its features
  alone, through the version's "unknown movie" id row;
- ``rare_movies.npy``: the movies rated in the training data but too rarely to be trained
  (:func:`write_rare`, :func:`read_rare`). The other movies outside the trained catalogue are new
  since training;
- a similar-movies list's source: :data:`COLLABORATIVE` (the movie's trained vector) or
  :data:`CONTENT` (its features alone).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.features import FEATURE_INPUTS, Vocabulary
from recsys.errors import DataError
from recsys.runtime.onnx import DAMAGED, session

ITEM_TOWER_FILE = "item_tower.onnx"
VOCABULARY_FILE = "vocabulary.json"
RARE_FILE = "rare_movies.npy"
ITEM_INPUTS = ("item_idx", *FEATURE_INPUTS)  # item_tower.onnx's inputs
COLLABORATIVE, CONTENT = "collaborative", "content"


def embed_movies(folder: Path, movies: pd.DataFrame, unknown: int, threads: int | None = None) -> np.ndarray:
    """Vectors [M, D] of ``movies`` (title, genres, optionally tags) from their features alone,
    with the version's id row ``unknown``; DataError when the vocabulary is damaged."""
    path = folder / VOCABULARY_FILE
    try:
        vocabulary = Vocabulary.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise DataError(f"cannot read {path} ({exc}); {DAMAGED}") from exc
    features = vocabulary.encode(movies.reset_index(drop=True)).arrays()
    feeds = dict(zip(FEATURE_INPUTS, features, strict=True))
    feeds["item_idx"] = np.full(len(movies), unknown, dtype=np.int64)
    return session(folder / ITEM_TOWER_FILE, threads).run(["item_vectors"], feeds)[0]


def write_rare(folder: Path, movie_ids: Iterable[int] | None) -> None:
    """``rare_movies.npy``: the distinct movie ids (none: an empty file)."""
    ids = np.asarray([] if movie_ids is None else list(movie_ids), dtype=np.int64)
    np.save(folder / RARE_FILE, np.unique(ids))


def read_rare(folder: Path) -> np.ndarray:
    """The version's rare movie ids; DataError when the file is damaged or missing."""
    try:
        return np.load(folder / RARE_FILE).astype(np.int64)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {folder / RARE_FILE} ({exc}); {DAMAGED}") from exc
