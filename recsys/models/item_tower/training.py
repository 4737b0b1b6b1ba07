"""Training of the item tower on the pairwise table: batches of (query, positive) rows, candidate
negatives per batch, the triplet loss, and the epoch with the best validation Recall@10 kept (the
untrained start counts as epoch 0)."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from recsys.config import SimilarConfig
from recsys.data.features import Vocabulary
from recsys.errors import DataError
from recsys.evaluation.similarity import similarity_metrics, vector_scores
from recsys.models.item_tower.model import ItemTower, triplet_loss

log = logging.getLogger(__name__)


@dataclass
class TripletData:
    """The table as item rows: (anchor, positive) training rows, and per anchor its positives and
    its hard and soft negatives (item_idx arrays)."""

    rows: np.ndarray  # [R, 2] (anchor, positive), both directions
    positives: dict[int, set[int]]
    hard: dict[int, np.ndarray]
    soft: dict[int, np.ndarray]

    @classmethod
    def from_table(cls, table: pd.DataFrame, movie_ids: np.ndarray) -> TripletData:
        index = pd.Index(movie_ids)
        train = table[table["split"] == "train"]
        first = index.get_indexer(train["movie_id_first"].to_numpy())
        second = index.get_indexer(train["movie_id_second"].to_numpy())
        kinds = train["kind"].to_numpy()
        ok = (first >= 0) & (second >= 0)
        # A train pair (x, q) whose reverse (q, x) is a held-out (valid or test) positive would show
        # that pair to training (22% of them on ml-latest-small); such pairs are left out.
        held = table[(table["split"] != "train") & (table["kind"] == "positive")]
        reverse = pd.MultiIndex.from_arrays([held["movie_id_second"], held["movie_id_first"]])
        seen = pd.MultiIndex.from_arrays([train["movie_id_first"], train["movie_id_second"]]).isin(reverse)
        pos = ok & (kinds == "positive") & ~seen
        pairs = np.stack([first[pos], second[pos]], axis=1)
        rows = np.unique(np.concatenate([pairs, pairs[:, ::-1]]), axis=0)
        positives: dict[int, set[int]] = {}
        for a, p in rows.tolist():
            positives.setdefault(a, set()).add(p)
        groups: dict[str, dict[int, np.ndarray]] = {}
        for kind in ("hard_negative", "soft_negative"):
            sel = ok & (kinds == kind)
            frame = pd.DataFrame({"a": first[sel], "n": second[sel]})
            groups[kind] = {int(a): g.to_numpy() for a, g in frame.groupby("a")["n"]}
        return cls(rows, positives, groups["hard_negative"], groups["soft_negative"])


@dataclass
class TowerResult:
    model: ItemTower
    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0  # 0: the starting state (nothing learnt beat it on validation)
    valid: dict[str, float] = field(default_factory=dict)
    start_valid: dict[str, float] = field(default_factory=dict)  # validation metrics before training


def _batch_candidates(
    data: TripletData,
    anchors: np.ndarray,
    positives: np.ndarray,
    n_items: int,
    cfg: SimilarConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate negatives of one batch and the [B, C] mask of those allowed per anchor."""
    parts = [positives]
    for source, per in ((data.hard, cfg.hard_per_anchor), (data.soft, cfg.soft_per_anchor)):
        if per <= 0:
            continue
        for a in anchors.tolist():
            pool = source.get(a)
            if pool is not None and len(pool):
                parts.append(rng.choice(pool, size=min(per, len(pool)), replace=False))
    if cfg.random_per_batch:
        parts.append(rng.integers(0, n_items, size=cfg.random_per_batch))
    candidates = np.unique(np.concatenate(parts))
    allowed = candidates[None, :] != anchors[:, None]
    for r, a in enumerate(anchors.tolist()):
        known = data.positives.get(a)
        if known:
            allowed[r] &= ~np.isin(candidates, np.fromiter(known, dtype=np.int64))
    return candidates, allowed


def evaluate_tower(
    model: ItemTower, table: pd.DataFrame, split: str, movie_ids: np.ndarray, cold: bool = False
) -> dict[str, float]:
    """:func:`recsys.runtime.similar.similarity_metrics` of the tower on one split of the table.
    ``cold``: each query embedded from its features alone (:meth:`ItemTower.content_vectors`), as a
    movie without enough positives is, against every movie's served vector."""
    model.eval()
    with torch.no_grad():
        vectors = model.all_vectors().numpy()
        queries = model.content_vectors().numpy() if cold else None
    return similarity_metrics(
        vector_scores(vectors, model.cfg.distance, queries), table[table["split"] == split], movie_ids
    )


def _train_epoch(
    model: ItemTower,
    data: TripletData,
    optimiser: torch.optim.Optimizer,
    cfg: SimilarConfig,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """One pass over the train rows in shuffled batches; (mean triplet loss, mean active share)."""
    model.train()
    order = rng.permutation(len(data.rows))
    losses, active = [], []
    for start in range(0, len(order), cfg.batch_size):
        batch = data.rows[order[start : start + cfg.batch_size]]
        anchors, positives = batch[:, 0], batch[:, 1]
        candidates, allowed = _batch_candidates(data, anchors, positives, model.n_items, cfg, rng)
        vectors = model(torch.as_tensor(np.concatenate([anchors, positives, candidates])))
        b, mask = len(anchors), torch.as_tensor(allowed)
        rest = (vectors[b : 2 * b], vectors[2 * b :], mask, cfg.margin, cfg.mining, cfg.distance)
        loss, share = triplet_loss(vectors[:b], *rest)
        if cfg.content_weight > 0:  # the anchors from their content alone, as a movie without an id
            idx = torch.as_tensor(anchors)
            cold = model.embed(torch.full_like(idx, model.unknown), *model.features_of(idx))
            loss = loss + cfg.content_weight * triplet_loss(cold, *rest)[0]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        active.append(float(share))
    return float(np.mean(losses)), float(np.mean(active))


def train_tower(
    table: pd.DataFrame,
    catalogue: pd.DataFrame,
    cfg: SimilarConfig,
    on_epoch: Callable[[dict], None] | None = None,
    max_minutes: float = 0.0,
    init_vectors: np.ndarray | None = None,
) -> TowerResult:
    """Train on the table's train split, keep the epoch with the best validation Recall@10.

    ``init_vectors`` [N, D] (rows in catalogue order, NaN for a movie without one; see
    :func:`recsys.evaluation.similarity.align_vectors`) start the id embeddings
    (:func:`~recsys.models.item_tower.model.initial_ids`); the starting state counts as epoch 0, so
    the epoch kept is never worse on validation than it. Raises DataError without train rows."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    movie_ids = catalogue["movie_id"].to_numpy(dtype=np.int64)
    vocabulary = Vocabulary.fit(catalogue, cfg.title_min_count, cfg.max_title_words)
    model = ItemTower(vocabulary, vocabulary.encode(catalogue), cfg, init_vectors)
    data = TripletData.from_table(table, movie_ids)
    if not len(data.rows):
        raise DataError("the pairwise table has no train positives for this catalogue; run `recsys pairs`")
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    report = on_epoch or (lambda row: None)
    result = TowerResult(model)
    result.start_valid = result.valid = evaluate_tower(model, table, "valid", movie_ids)
    report({"epoch": 0, **{f"valid_{k}": v for k, v in result.valid.items() if k != "queries"}})
    best_state, stale, started = copy.deepcopy(model.state_dict()), 0, time.perf_counter()
    for epoch in range(1, cfg.max_epochs + 1):
        tick = time.perf_counter()
        loss, active = _train_epoch(model, data, optimiser, cfg, rng)
        valid = evaluate_tower(model, table, "valid", movie_ids)
        row = {"epoch": epoch, "triplet_loss": loss, "active_triplets": active}
        row |= {f"valid_{k}": v for k, v in valid.items() if k != "queries"}
        row["epoch_seconds"] = time.perf_counter() - tick
        result.epochs.append(row)
        report(row)
        log.info(
            "similar epoch %d: triplet loss %.4f, valid recall@10 %.4f", epoch, loss, valid["recall_at_10"]
        )
        if valid["recall_at_10"] > result.valid["recall_at_10"]:
            best_state, stale = copy.deepcopy(model.state_dict()), 0
            result.best_epoch, result.valid = epoch, valid
        elif (stale := stale + 1) >= cfg.patience:
            break
        if max_minutes and time.perf_counter() - started > 60 * max_minutes:
            break
    model.load_state_dict(best_state)
    model.eval()
    return result
