"""Export of a trained item tower as a ``movie_similar`` bundle (recsys.runtime.similar.SimilarBundle):
the ONNX graph movie -> its top-K other movies, the item vectors, the catalogue and bundle.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from recsys.models.item_tower.model import ItemTower
from recsys.models.onnx_export import export_graph
from recsys.runtime import similar as similar_bundle


class SimilarRetrieval(nn.Module):
    """item_idx [B] -> the top-K other movies (item_idx [B, K], scores [B, K]), best first.

    The trained vectors are a constant of the graph; the query's own column is masked to -inf."""

    vectors: Tensor  # buffers: [N, D], [N]
    norms: Tensor

    def __init__(self, vectors: Tensor, k: int, distance: str) -> None:
        super().__init__()
        if not 1 <= k < len(vectors):
            raise ValueError(f"k must be in 1..{len(vectors) - 1} (catalogue size - 1), got {k}")
        vectors = vectors.detach().float()
        if distance == "l2":  # the same distances, computed close to the origin (see distances())
            vectors = vectors - vectors.mean(0, keepdim=True)
        self.register_buffer("vectors", vectors.clone())
        self.register_buffer("norms", (self.vectors * self.vectors).sum(1))
        self.k, self.distance = k, distance

    def forward(self, item_idx: Tensor) -> tuple[Tensor, Tensor]:
        query = self.vectors[item_idx]
        dots = query @ self.vectors.T
        if self.distance == "l2":
            scores = -(self.norms[item_idx][:, None] + self.norms[None, :] - 2 * dots).clamp_min(0.0).sqrt()
        else:
            scores = dots
        own = torch.arange(scores.shape[1])[None, :] == item_idx[:, None]
        scores = scores.masked_fill(own, float("-inf"))
        values, indices = torch.topk(scores, self.k, dim=1)
        return indices, values


def write_bundle(model: ItemTower, catalogue: pd.DataFrame, k: int, folder: Path, extra: dict) -> Path:
    """The movie_similar version's bundle (recsys.runtime.similar.SimilarBundle) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    model.eval()
    with torch.no_grad():
        vectors = model.all_vectors()
    k = min(k, model.n_items - 1)
    retrieval = SimilarRetrieval(vectors, k, model.cfg.distance).eval()
    export_graph(
        retrieval,
        (torch.arange(4, dtype=torch.long) % model.n_items,),
        ["item_idx"],
        ["similar_idx", "scores"],
        {"item_idx": {0: torch.export.Dim("batch")}},
        folder / "similar.onnx",
    )
    np.save(folder / "item_vectors.npy", vectors.numpy().astype(np.float32))
    columns = [c for c in ("item_idx", "movie_id", "title", "genres", "train_count") if c in catalogue]
    catalogue[columns].to_parquet(folder / "catalogue.parquet", index=False)
    meta = {
        "format": similar_bundle.FORMAT,
        "k": k,
        "distance": model.cfg.distance,
        "n_items": model.n_items,
        "embedding_dim": model.cfg.embedding_dim,
        **extra,
    }
    (folder / similar_bundle.BUNDLE_FILE).write_text(json.dumps(meta, indent=2))
    return folder
