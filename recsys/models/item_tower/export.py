"""Export of a trained item tower as a ``movie_similar`` bundle (recsys.runtime.similar.SimilarBundle):
the ONNX graph (movie, item table) -> its top-K other movies, the item tower graph that embeds a
movie from its features, the vocabulary, the item vectors, the catalogue and bundle.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from recsys.models.item_tower.model import ItemTower
from recsys.models.onnx_export import export_graph
from recsys.models.two_tower.content import example_features
from recsys.runtime import similar as similar_bundle
from recsys.runtime.content import ITEM_INPUTS, ITEM_TOWER_FILE, VOCABULARY_FILE, write_rare


class SimilarRetrieval(nn.Module):
    """(query [B, D], query_row [B], item_table [C, D]) -> the top-K candidates of each query (rows
    of the table [B, K], scores [B, K]), best first. ``query_row``: the query's own row in the
    table, masked to -inf (-1: not a candidate). The table is an input, so tonight's candidates (the
    trained vectors and the movies embedded from their features since) go through the same graph."""

    def __init__(self, k: int, distance: str) -> None:
        super().__init__()
        self.k, self.distance = k, distance

    def forward(self, query: Tensor, query_row: Tensor, table: Tensor) -> tuple[Tensor, Tensor]:
        if self.distance == "l2":  # the same distances, computed close to the origin (see distances())
            centre = table.mean(0, keepdim=True)
            table, query = table - centre, query - centre
        dots = query @ table.T
        if self.distance == "l2":
            norms = (table * table).sum(1)
            scores = -((query * query).sum(1)[:, None] + norms[None, :] - 2 * dots).clamp_min(0.0).sqrt()
        else:
            scores = dots
        own = torch.arange(scores.shape[1])[None, :] == query_row[:, None]
        scores = scores.masked_fill(own, float("-inf"))
        values, indices = torch.topk(scores, self.k, dim=1)
        return indices, values


class ContentTower(nn.Module):
    """(item_idx [M] (``n_items``: no trained id), features) -> [M, D]: the tower as exported."""

    def __init__(self, model: ItemTower) -> None:
        super().__init__()
        self.model = model

    def forward(self, item_idx: Tensor, *features: Tensor) -> Tensor:
        return self.model.embed(item_idx, *features)


def _export_retrieval(k: int, distance: str, vectors: Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch")
    shapes = {"query": {0: batch}, "query_row": {0: batch}, "table": {0: torch.export.Dim("rows", min=k + 1)}}
    rows = torch.arange(4, dtype=torch.long) % len(vectors)
    export_graph(
        SimilarRetrieval(k, distance).eval(),
        (vectors[rows], rows, vectors),
        list(similar_bundle.GRAPH_INPUTS),
        ["similar_idx", "scores"],
        shapes,
        path,
    )


def _export_item_tower(model: ItemTower, path: Path) -> None:
    idx = torch.tensor([0, 1, model.unknown])  # two trained movies and one without an id
    features = example_features(model.vocabulary, len(idx))
    rows = torch.export.Dim("items", min=2)
    shapes = {"item_idx": {0: rows}, "features": tuple({0: rows} for _ in features)}
    names = list(ITEM_INPUTS)
    export_graph(ContentTower(model).eval(), (idx, *features), names, ["item_vectors"], shapes, path)


def write_bundle(
    model: ItemTower,
    catalogue: pd.DataFrame,
    k: int,
    folder: Path,
    extra: dict,
    rare: pd.Series | None = None,
) -> Path:
    """The movie_similar version's bundle (recsys.runtime.similar.SimilarBundle) in ``folder``.
    ``rare``: the movie ids rated in the training data but left out of its catalogue (too few
    positives); tonight's lists give them a list but do not recommend them (see the bundle)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.eval()
    with torch.no_grad():
        vectors = model.all_vectors()
    k = min(k, model.n_items - 1)
    if k < 1:
        raise ValueError(f"a catalogue of {model.n_items} movie(s) has no other movie to list")
    _export_retrieval(k, model.cfg.distance, vectors, folder / similar_bundle.GRAPH_FILE)
    _export_item_tower(model, folder / ITEM_TOWER_FILE)
    (folder / VOCABULARY_FILE).write_text(json.dumps(model.vocabulary.as_dict()))
    np.save(folder / similar_bundle.VECTORS_FILE, vectors.numpy().astype(np.float32))
    write_rare(folder, rare)
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
