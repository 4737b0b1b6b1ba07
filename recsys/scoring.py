"""Batch scoring with ONNX Runtime: every user's top-K list over the whole catalogue.

Output (the recommendations data product, one row per user): ``user_id`` int64, ``item_ids``
list[int64] (MovieLens movie ids, best first), ``scores`` list[float32], ``model_version`` str,
``event_timestamp`` UTC timestamp.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
from tqdm.auto import tqdm

from recsys.errors import DataError
from recsys.export import pad_lists

log = logging.getLogger(__name__)


class OnnxRetriever:
    """An ONNX Runtime session over the retrieval graph written by :func:`recsys.export.export_onnx`."""

    def __init__(self, onnx_path: Path, n_items: int, threads: int | None = None) -> None:
        if not Path(onnx_path).is_file():
            raise DataError(f"ONNX model {onnx_path} does not exist")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx_path), options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.n_items = n_items

    @property
    def needs_history(self) -> bool:
        return "history" in self.inputs

    def recommend(self, user_idx: np.ndarray, seen: list[np.ndarray],
                  history: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-K for a batch: user_idx [B], seen lists (item_idx), history [B, H] -> ([B, K], [B, K])."""
        feeds = {"user_idx": np.asarray(user_idx, dtype=np.int64),
                 "seen": pad_lists(seen, self.n_items)}
        if self.needs_history:
            if history is None:
                raise ValueError("this model's user tower needs a history [B, H]")
            feeds["history"] = np.asarray(history, dtype=np.int64)
        item_idx, scores = self.session.run(["item_idx", "scores"], feeds)
        return item_idx, scores


def to_rows(user_ids: np.ndarray, item_idx: np.ndarray, scores: np.ndarray,
            movie_ids: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Map item indices to movie ids per row, dropping masked (-inf) tail entries."""
    item_lists, score_lists = [], []
    for row in range(len(user_ids)):
        keep = np.isfinite(scores[row])
        item_lists.append(movie_ids[item_idx[row][keep]].astype(np.int64))
        score_lists.append(scores[row][keep].astype(np.float32))
    return item_lists, score_lists


def score_users(retriever: OnnxRetriever, user_idx: np.ndarray, user_ids: np.ndarray,
                rated: list[np.ndarray], movie_ids: np.ndarray, model_version: str,
                histories: np.ndarray | None = None, batch_size: int = 1024,
                progress: bool = False) -> pd.DataFrame:
    """Score the given users (a shard or all) in batches; ``rated`` is indexed by user_idx.

    Returns the recommendations frame described in the module docstring.
    """
    if len(user_idx) != len(user_ids):
        raise ValueError("user_idx and user_ids must have the same length")
    items_out: list[np.ndarray] = []
    scores_out: list[np.ndarray] = []
    starts = range(0, len(user_idx), batch_size)
    for start in tqdm(starts, desc="scoring", disable=not progress, leave=False):
        batch = user_idx[start:start + batch_size]
        hist = None if histories is None else histories[batch]
        idx, sc = retriever.recommend(batch, [rated[u] for u in batch], hist)
        items, scores = to_rows(user_ids[start:start + batch_size], idx, sc, movie_ids)
        items_out.extend(items)
        scores_out.extend(scores)
    now = pd.Timestamp(datetime.now(timezone.utc))
    log.info("scored %d users with model %s", len(user_idx), model_version)
    return pd.DataFrame({
        "user_id": np.asarray(user_ids, dtype=np.int64),
        "item_ids": items_out,
        "scores": scores_out,
        "model_version": str(model_version),
        "event_timestamp": now,
    })


def write_recommendations(recs: pd.DataFrame, path: Path) -> Path:
    """Write the recommendations parquet atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    recs.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def read_recommendations(path: Path) -> pd.DataFrame:
    """Read a recommendations parquet (raises DataError if missing)."""
    if not path.is_file():
        raise DataError(f"recommendations {path} do not exist; run `recsys score` first")
    return pd.read_parquet(path)
