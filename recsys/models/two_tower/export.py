"""Export a trained two-tower as an ONNX graph that does retrieval end to end.

Graph inputs: ``history`` int64 [B, H] for the history towers (each user's most recent positives,
oldest first, left-padded with ``n_items``) or ``user_idx`` int64 [B] for the id tower; and
``seen`` int64 [B, S] - each user's already-seen item indices, right-padded with ``n_items``.
Outputs: ``item_idx`` int64 [B, K] and ``scores`` float32 [B, K], best first; seen items are
masked to -inf inside the graph, so they never appear unless a user has seen almost everything
(then the tail holds -inf scores, which callers drop). A history tower's graph needs no
training-time user index: it scores anyone from today's history.

Nightly scoring reads a faster pair beside it (:func:`export_scoring`): ``user_tower.onnx`` (the
same user input -> ``user_vectors`` float32 [B, D]; a history may be cut to its last L <= H
columns, 2 <= L, when the cut columns are padding) and ``item_vectors.npy`` (float32 [N, D]);
recsys.runtime.two_tower multiplies the two with an ONNX Runtime MatMul and selects the top K with the fused
kernel of recsys.runtime.topk, which returns what the end-to-end graph returns, several times faster.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from recsys.models.onnx_export import export_graph
from recsys.models.two_tower.model import TwoTower

log = logging.getLogger(__name__)


class TopKRetrieval(nn.Module):
    """Wrap a TwoTower: user input -> dot-product scores over the catalogue -> mask seen -> top-K."""

    def __init__(self, model: TwoTower, k: int) -> None:
        super().__init__()
        if not 1 <= k <= model.n_items:
            raise ValueError(f"k must be in 1..{model.n_items} (catalogue size), got {k}")
        self.model, self.k = model, k

    def forward(self, user: Tensor, seen: Tensor) -> tuple[Tensor, Tensor]:
        """user: history [B, H] (history towers) or user_idx [B] (id tower); seen [B, S]."""
        if self.model.reads_history:
            scores = self.model.score_all(history=user)
        else:
            scores = self.model.score_all(user_idx=user)
        # One extra column absorbs the padding index, then is cut off again.
        padded = torch.cat([scores, torch.zeros_like(scores[:, :1])], dim=1)
        padded = padded.scatter(1, seen, torch.full_like(seen, 0, dtype=scores.dtype) - torch.inf)
        values, indices = torch.topk(padded[:, : self.model.n_items], self.k, dim=1)
        return indices, values


def input_name(model: TwoTower) -> str:
    """Name of the graph's user input: ``history`` or ``user_idx``."""
    return "history" if model.reads_history else "user_idx"


def example_inputs(model: TwoTower, batch: int = 4, n_seen: int = 3) -> tuple[Tensor, Tensor]:
    """Small valid inputs for tracing and tests: (history [B, H] or user_idx [B], seen [B, S])."""
    seen = torch.full((batch, n_seen), model.n_items, dtype=torch.long)
    seen[:, 0] = 0
    if model.reads_history:
        history = torch.full((batch, model.cfg.history_length), model.n_items, dtype=torch.long)
        history[:, -1] = 1
        history[0, -min(3, history.shape[1]) :] = 1
        return history, seen
    return torch.arange(batch, dtype=torch.long) % model.n_users, seen


class UserTower(nn.Module):
    """A TwoTower's user side alone: history [B, H] or user_idx [B] -> user vectors [B, D]."""

    def __init__(self, model: TwoTower) -> None:
        super().__init__()
        self.model = model

    def forward(self, user: Tensor) -> Tensor:
        if self.model.reads_history:
            return self.model.user_vectors(history=user)
        return self.model.user_vectors(user_idx=user)


def export_onnx(model: TwoTower, path: Path, k: int) -> Path:
    """Write the retrieval graph to ``path`` (one self-contained file) and return the path."""
    model = model.eval()
    k = min(k, model.n_items)
    inputs = example_inputs(model)
    batch, n_seen = torch.export.Dim("batch"), torch.export.Dim("n_seen")
    shapes: dict = {"user": {0: batch}, "seen": {0: batch, 1: n_seen}}
    export_graph(
        TopKRetrieval(model, k).eval(),
        inputs,
        [input_name(model), "seen"],
        ["item_idx", "scores"],
        shapes,
        path,
    )
    log.info("exported ONNX retrieval graph (k=%d, input %s) to %s", k, input_name(model), path)
    return path


def export_scoring(model: TwoTower, folder: Path) -> tuple[Path, Path]:
    """Write ``user_tower.onnx`` and ``item_vectors.npy`` (see the module docstring) into ``folder``."""
    model = model.eval()
    tower = folder / "user_tower.onnx"
    dims = {0: torch.export.Dim("batch")}
    if model.reads_history:  # callers may cut the columns that are padding in every row
        dims[1] = torch.export.Dim("length", min=2, max=model.cfg.history_length)
    export_graph(
        UserTower(model).eval(),
        example_inputs(model)[:1],
        [input_name(model)],
        ["user_vectors"],
        {"user": dims},
        tower,
    )
    items = folder / "item_vectors.npy"
    with torch.no_grad():
        np.save(items, model.item_vectors().float().numpy())
    log.info(
        "exported the user tower (input %s) and %d item vectors to %s",
        input_name(model),
        model.n_items,
        folder,
    )
    return tower, items
