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

A content item tower (recsys.models.two_tower.content) adds ``item_tower.onnx`` (item_idx, with
``n_items`` for a movie without a trained id, and the features of :data:`ITEM_INPUTS` ->
``item_vectors``) and ``vocabulary.json`` (recsys.data.features.Vocabulary), so the nightly
scoring embeds tonight's catalogue, new movies included; its history tower's ``user_tower.onnx``
takes that table as a second input, ``item_table`` [M + 1, D] (padding row last, histories
indexed into it). ``model.onnx`` bakes in the trained catalogue's table.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from recsys.models.onnx_export import export_graph
from recsys.models.two_tower.content import example_features
from recsys.models.two_tower.model import TwoTower
from recsys.models.two_tower.scoring_tower import SasrecScoringTower
from recsys.runtime.content import ITEM_INPUTS
from recsys.runtime.two_tower import CONTENT_FILES, ITEM_TABLE

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
    """A TwoTower's user side alone: history [B, H] or user_idx [B] -> user vectors [B, D].

    A content history tower also takes ``item_table`` [M + 1, D] (tonight's item vectors, padding
    row last) and reads the history's indices from it, so a movie new since training counts. The
    SASRec tower is exported as :class:`SasrecScoringTower` (same function, fewer and cheaper ops).
    """

    def __init__(self, model: TwoTower) -> None:
        super().__init__()
        self.model = model
        self.sasrec = SasrecScoringTower(model.encoder) if model.cfg.user_tower == "sasrec" else None

    def forward(self, user: Tensor, table: Tensor | None = None) -> Tensor:
        if self.sasrec is not None:
            return self.sasrec(user, self.model.item_emb.weight if table is None else table)
        if self.model.reads_history:
            return self.model.user_vectors(history=user, table=table)
        return self.model.user_vectors(user_idx=user)


class ItemTower(nn.Module):
    """A content item tower alone: (item_idx [M] (``n_items``: no trained id), features) -> [M, D]."""

    def __init__(self, model: TwoTower) -> None:
        super().__init__()
        self.model = model

    def forward(self, item_idx: Tensor, *features: Tensor) -> Tensor:
        return self.model.content_vectors(*features) + self.model.item_emb(item_idx)


def reads_table(model: TwoTower) -> bool:
    """True when the user tower graph takes the item table (a content history tower)."""
    return model.reads_history and model.reads_content


def export_onnx(model: TwoTower, path: Path, k: int) -> Path:
    """Write the retrieval graph to ``path`` (one self-contained file) and return the path.

    The user tower is exported once (:func:`export_scoring`, the dynamo exporter: seconds) and the
    retrieval tail is appended to it by :func:`retrieval_graph` (milliseconds)."""
    import tempfile

    with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as tmp:
        tower, items = export_scoring(model, Path(tmp))
        return retrieval_graph(tower, items, k, path)


def retrieval_graph(tower: Path, items: Path, k: int, path: Path) -> Path:
    """``model.onnx`` (the module docstring) from a version's ``user_tower.onnx`` and
    ``item_vectors.npy``: the tower's ``user_vectors`` -> MatMul by the item vectors -> seen items
    set to -inf -> TopK, the same ops :class:`TopKRetrieval` exports, without a second export."""
    import onnx
    from onnx import TensorProto, compose, helper, numpy_helper

    tower_model = onnx.load(str(tower))
    vectors = np.load(items)
    _bake_item_table(tower_model, vectors)
    n, d = vectors.shape
    k = min(k, n)
    if not 1 <= k:
        raise ValueError(f"k must be in 1..{n} (catalogue size), got {k}")
    init = [
        numpy_helper.from_array(np.ascontiguousarray(vectors.T, dtype=np.float32), "items_t"),
        numpy_helper.from_array(np.array([0, 0, 0, 1], dtype=np.int64), "pad_one_column"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([n], dtype=np.int64), "n_items"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_one"),
        numpy_helper.from_array(np.array([k], dtype=np.int64), "k"),
    ]
    minus_inf = helper.make_tensor("minus_inf", TensorProto.FLOAT, [1], [-np.inf])
    nodes = [
        helper.make_node("MatMul", ["user_vectors", "items_t"], ["all_scores"]),
        # one extra column absorbs the padding index n_items of ``seen``, then is cut off again
        helper.make_node("Pad", ["all_scores", "pad_one_column"], ["padded"]),
        helper.make_node("Shape", ["seen"], ["seen_shape"]),
        helper.make_node("ConstantOfShape", ["seen_shape"], ["seen_minus_inf"], value=minus_inf),
        helper.make_node("ScatterElements", ["padded", "seen", "seen_minus_inf"], ["masked"], axis=1),
        helper.make_node("Slice", ["masked", "zero", "n_items", "axis_one"], ["unseen"]),
        helper.make_node("TopK", ["unseen", "k"], ["scores", "item_idx"], axis=1, largest=1, sorted=1),
    ]
    tail = helper.make_graph(
        nodes,
        "retrieval",
        [
            helper.make_tensor_value_info("user_vectors", TensorProto.FLOAT, ["batch", d]),
            helper.make_tensor_value_info("seen", TensorProto.INT64, ["batch", "n_seen"]),
        ],
        [
            helper.make_tensor_value_info("item_idx", TensorProto.INT64, ["batch", k]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", k]),
        ],
        init,
    )
    opset = next(o.version for o in tower_model.opset_import if o.domain in ("", "ai.onnx"))
    tail_model = helper.make_model(tail, opset_imports=[helper.make_opsetid("", opset)])
    tail_model.ir_version = tower_model.ir_version
    merged = compose.merge_models(tower_model, tail_model, io_map=[("user_vectors", "user_vectors")])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(merged, str(path))
    user = tower_model.graph.input[0].name
    log.info("wrote the ONNX retrieval graph (k=%d, input %s) to %s", k, user, path)
    return path


def _bake_item_table(tower_model, vectors: np.ndarray) -> None:  # noqa: ANN001
    """A tower graph that takes ``item_table``: make it the trained catalogue's (plus the padding
    row), an initializer instead of an input, so the end-to-end graph takes the user input alone."""
    from onnx import numpy_helper

    graph = tower_model.graph
    for i, value in enumerate(graph.input):
        if value.name == ITEM_TABLE:
            del graph.input[i]
            table = np.vstack([vectors, np.zeros((1, vectors.shape[1]), vectors.dtype)]).astype(np.float32)
            graph.initializer.append(numpy_helper.from_array(table, ITEM_TABLE))
            return


def export_scoring(model: TwoTower, folder: Path) -> tuple[Path, Path]:
    """Write ``user_tower.onnx`` and ``item_vectors.npy`` (see the module docstring) into ``folder``;
    for a content item tower also ``item_tower.onnx`` and ``vocabulary.json``."""
    model = model.eval()
    tower = folder / "user_tower.onnx"
    dims = {0: torch.export.Dim("batch")}
    if model.reads_history and model.cfg.history_length > 2:  # callers may cut the columns
        # that are padding in every row, down to 2 (a history of 2 is never cut)
        dims[1] = torch.export.Dim("length", min=2, max=model.cfg.history_length)
    with torch.no_grad():
        vectors = model.item_vectors().detach().float()
    inputs: tuple[Tensor, ...] = example_inputs(model)[:1]
    names, shapes = [input_name(model)], {"user": dims}
    if reads_table(model):
        inputs += (torch.cat([vectors, vectors.new_zeros(1, vectors.shape[1])]),)
        names.append(ITEM_TABLE)
        shapes["table"] = {0: torch.export.Dim("table_rows", min=3)}
    export_graph(UserTower(model).eval(), inputs, names, ["user_vectors"], shapes, tower)
    items = folder / "item_vectors.npy"
    np.save(items, vectors.numpy())
    if model.reads_content:
        export_item_tower(model, folder)
    log.info(
        "exported the user tower (input %s) and %d item vectors to %s",
        input_name(model),
        model.n_items,
        folder,
    )
    return tower, items


def export_item_tower(model: TwoTower, folder: Path) -> Path:
    """``item_tower.onnx`` (:data:`ITEM_INPUTS` -> ``item_vectors``) and ``vocabulary.json``: what
    embeds tonight's catalogue, new movies included, with no torch (recsys.runtime.two_tower)."""
    assert model.vocabulary is not None
    path = folder / CONTENT_FILES[0]
    n = 3  # examples: two trained movies and one without an id
    idx = torch.tensor([0, 1, model.n_items])
    features = example_features(model.vocabulary, n)
    rows = torch.export.Dim("items", min=2)
    shapes = {"item_idx": {0: rows}, "features": tuple({0: rows} for _ in features)}
    export_graph(ItemTower(model).eval(), (idx, *features), list(ITEM_INPUTS), ["item_vectors"], shapes, path)
    (folder / CONTENT_FILES[1]).write_text(json.dumps(model.vocabulary.as_dict()))
    return path
