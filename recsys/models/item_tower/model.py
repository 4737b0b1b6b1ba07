"""The "similar movies" item tower, trained with a triplet loss on the pairwise table (recsys.data.pairs).

Tower: item_idx -> (id embedding + genre projection + decade embedding + mean title-word embedding)
-> a residual MLP -> a vector (unit length for the cosine distance). The features live in buffers,
so the exported graph needs nothing but the item index. Siamese: anchor, positive and negative go
through the same tower. Given another model's item vectors (the two-tower champion's), the id
embeddings start from them and the features and the MLP's output start at zero: the untrained
tower then ranks as those vectors do, and training fine-tunes them (benchmarks/similar.py: from
scratch the triplets alone do not reach the two-tower's vectors; fine-tuned they beat them).

Loss: mean over anchors of [D(a, p) - D(a, n) + margin]+ (FaceNet). Each batch holds (query,
positive) rows of the train split; the candidate negatives of the batch are the other rows'
positives, ``hard_per_anchor`` of each anchor's hard negatives and ``soft_per_anchor`` of its soft
negatives from the table, and ``random_per_batch`` catalogue movies. A candidate that is a known
positive of the anchor, or the anchor itself, is never its negative. Mining picks one negative per
anchor among the candidates: the closest (``batch_hard``) or the closest that is still farther
than the positive (``semi_hard``, the farthest when none is). Pairs are used both ways (the
relation is symmetric), except a train pair whose reverse is a validation or test positive: it would
show training that held-out pair. The epoch kept is the one with the best validation Recall@10.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.config import SimilarConfig
from recsys.models.two_tower.export import _export
from recsys.runtime import similar as similar_mod
from recsys.runtime.similar import ItemFeatures, item_features, similarity_metrics

log = logging.getLogger(__name__)


class ItemTower(nn.Module):
    """item_idx [B] -> vectors [B, D] (see the module docstring)."""

    genres: Tensor  # buffers: [N, G], [N], [N, W]
    decade: Tensor
    words: Tensor

    def __init__(
        self, features: ItemFeatures, cfg: SimilarConfig, init_vectors: np.ndarray | None = None
    ) -> None:
        super().__init__()
        self.cfg = cfg
        n, dim = len(features.decade), cfg.embedding_dim
        self.n_items = n
        self.register_buffer("genres", torch.as_tensor(features.genres, dtype=torch.float32))
        self.register_buffer("decade", torch.as_tensor(features.decade, dtype=torch.long))
        self.register_buffer("words", torch.as_tensor(features.words, dtype=torch.long))
        init_dim = dim if init_vectors is None else int(init_vectors.shape[1])
        self.id_emb = nn.Embedding(n, init_dim)
        # another width (the two-tower's embedding_dim differs): a learned projection, orthogonal at
        # the start (dot products kept when it widens; a random projection when it narrows)
        self.id_proj: nn.Module = nn.Identity()
        if init_dim != dim:
            self.id_proj = nn.Linear(init_dim, dim, bias=False)
            nn.init.orthogonal_(self.id_proj.weight)
        self.genre_proj = nn.Linear(features.genres.shape[1], dim, bias=False)
        self.decade_emb = nn.Embedding(features.n_decades, dim)
        self.word_emb = nn.Embedding(features.n_words, dim, padding_idx=0)
        for emb in (self.id_emb, self.decade_emb, self.word_emb):
            nn.init.normal_(emb.weight, std=0.05)
        with torch.no_grad():
            self.word_emb.weight[0].zero_()
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm = nn.LayerNorm(dim)
        if init_vectors is not None:
            # Fine-tuning: the features and the MLP's output start at zero, so the starting tower
            # ranks movies as the given vectors do (up to LayerNorm's centring) and training moves
            # away from them only where the triplets ask for it.
            with torch.no_grad():
                self.id_emb.weight.copy_(torch.as_tensor(initial_ids(init_vectors, cfg.seed)))
                for zero in (self.genre_proj.weight, self.decade_emb.weight, self.word_emb.weight):
                    zero.zero_()
                last = self.mlp[2]
                assert isinstance(last, nn.Linear)
                last.weight.zero_()
                last.bias.zero_()

    def forward(self, item_idx: Tensor) -> Tensor:
        ids = self.id_proj(self.id_emb(item_idx))
        if self.training and self.cfg.id_dropout > 0:
            keep = torch.rand(len(item_idx), 1, device=ids.device) >= self.cfg.id_dropout
            ids = ids * keep
        words = self.words[item_idx]
        real = (words != 0).unsqueeze(-1).float()
        title = (self.word_emb(words) * real).sum(1) / real.sum(1).clamp(min=1.0)
        x = ids + self.genre_proj(self.genres[item_idx]) + self.decade_emb(self.decade[item_idx]) + title
        x = self.norm(x + self.mlp(x))
        return F.normalize(x, dim=-1) if self.cfg.distance == "cosine" else x

    def all_vectors(self) -> Tensor:
        return self(torch.arange(self.n_items))


def initial_ids(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """Id embeddings from another model's item vectors [N, D] (rows of NaN: movies it lacks), scaled
    to unit mean norm; a missing row starts at random with that norm's per-coordinate spread."""
    vectors = np.asarray(vectors, dtype=np.float32)
    known = ~np.isnan(vectors).any(1)
    if not known.any():
        raise ValueError("no movie has an initial vector")
    scale = float(np.linalg.norm(vectors[known], axis=1).mean())
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"initial vectors have mean norm {scale}")
    out = vectors / scale
    rng = np.random.default_rng(seed)
    missing = int((~known).sum())
    out[~known] = rng.normal(0.0, 1.0 / np.sqrt(vectors.shape[1]), size=(missing, vectors.shape[1]))
    return out.astype(np.float32)


def distances(a: Tensor, b: Tensor, distance: str) -> Tensor:
    """Pairwise D: a [A, D], b [C, D] -> [A, C]; 1 - cos (unit vectors) or Euclidean."""
    if distance == "cosine":
        return 1.0 - a @ b.T
    # Distances do not change under a translation: centring first keeps |a|^2 + |b|^2 - 2ab exact
    # in float32 when the vectors sit close together far from the origin (batch-hard training
    # drives them there).
    centre = torch.cat([a, b]).mean(0, keepdim=True).detach()
    a, b = a - centre, b - centre
    squared = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return squared.clamp_min(1e-12).sqrt()


def triplet_loss(
    anchors: Tensor,
    positives: Tensor,
    candidates: Tensor,
    allowed: Tensor,
    margin: float,
    mining: str,
    distance: str,
) -> tuple[Tensor, Tensor]:
    """Mean [D(a, p) - D(a, n) + margin]+ with one mined negative per anchor.

    anchors, positives [B, D]; candidates [C, D]; allowed [B, C] (False: not a negative of that
    anchor). Returns (loss, share of anchors with a non-zero loss). An anchor without any allowed
    candidate contributes nothing.
    """
    d_ap = (
        (anchors - positives).pow(2).sum(1).clamp_min(1e-12).sqrt()
        if distance == "l2"
        else (1.0 - (anchors * positives).sum(1))
    )
    d_an = distances(anchors, candidates, distance)
    inf = torch.finfo(d_an.dtype).max
    hardest = d_an.masked_fill(~allowed, inf).min(1).values
    if mining == "semi_hard":
        farther = allowed & (d_an > d_ap[:, None])
        semi = d_an.masked_fill(~farther, inf).min(1).values
        easiest = d_an.masked_fill(~allowed, -inf).max(1).values
        chosen = torch.where(farther.any(1), semi, easiest)
    else:
        chosen = hardest
    losses = F.relu(d_ap - chosen + margin)
    has = allowed.any(1)
    if not bool(has.any()):
        return anchors.sum() * 0.0, torch.tensor(0.0)
    losses = losses[has]
    return losses.mean(), (losses > 0).float().mean()


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
    model: ItemTower, table: pd.DataFrame, split: str, movie_ids: np.ndarray
) -> dict[str, float]:
    """:func:`recsys.runtime.similar.similarity_metrics` of the tower on one split of the table."""
    model.eval()
    with torch.no_grad():
        vectors = model.all_vectors().numpy()
    return similarity_metrics(
        similar_mod.vector_scores(vectors, model.cfg.distance), table[table["split"] == split], movie_ids
    )


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
    :func:`recsys.runtime.similar.align_vectors`) start the id embeddings (:func:`initial_ids`); the
    starting state counts as epoch 0, so the epoch kept is never worse on validation than it."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    movie_ids = catalogue["movie_id"].to_numpy(dtype=np.int64)
    features = item_features(catalogue, cfg.title_min_count, cfg.max_title_words)
    model = ItemTower(features, cfg, init_vectors)
    data = TripletData.from_table(table, movie_ids)
    if not len(data.rows):
        from recsys.errors import DataError

        raise DataError("the pairwise table has no train positives for this catalogue; run `recsys pairs`")
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    result = TowerResult(model)
    initial = evaluate_tower(model, table, "valid", movie_ids)
    result.start_valid = initial
    if on_epoch is not None:
        on_epoch({"epoch": 0, **{f"valid_{k}": v for k, v in initial.items() if k != "queries"}})
    best, best_state, stale = initial["recall_at_10"], copy.deepcopy(model.state_dict()), 0
    result.best_epoch, result.valid = 0, initial
    started = time.perf_counter()
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        tick = time.perf_counter()
        order = rng.permutation(len(data.rows))
        losses, active = [], []
        for start in range(0, len(order), cfg.batch_size):
            batch = data.rows[order[start : start + cfg.batch_size]]
            anchors, positives = batch[:, 0], batch[:, 1]
            candidates, allowed = _batch_candidates(data, anchors, positives, model.n_items, cfg, rng)
            every = torch.as_tensor(np.concatenate([anchors, positives, candidates]))
            vectors = model(every)
            b = len(anchors)
            loss, share = triplet_loss(
                vectors[:b],
                vectors[b : 2 * b],
                vectors[2 * b :],
                torch.as_tensor(allowed),
                cfg.margin,
                cfg.mining,
                cfg.distance,
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            active.append(float(share))
        valid = evaluate_tower(model, table, "valid", movie_ids)
        row = {
            "epoch": epoch,
            "triplet_loss": float(np.mean(losses)),
            "active_triplets": float(np.mean(active)),
            **{f"valid_{k}": v for k, v in valid.items() if k != "queries"},
            "epoch_seconds": time.perf_counter() - tick,
        }
        result.epochs.append(row)
        if on_epoch is not None:
            on_epoch(row)
        log.info(
            "similar epoch %d: triplet loss %.4f, valid recall@10 %.4f",
            epoch,
            row["triplet_loss"],
            valid["recall_at_10"],
        )
        if valid["recall_at_10"] > best:
            best, best_state, stale = valid["recall_at_10"], copy.deepcopy(model.state_dict()), 0
            result.best_epoch, result.valid = epoch, valid
        else:
            stale += 1
            if stale >= cfg.patience:
                break
        if max_minutes and time.perf_counter() - started > 60 * max_minutes:
            break
    model.load_state_dict(best_state)
    model.eval()
    return result


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
    _export(
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
        "format": similar_mod.FORMAT,
        "k": k,
        "distance": model.cfg.distance,
        "n_items": model.n_items,
        "embedding_dim": model.cfg.embedding_dim,
        **extra,
    }
    (folder / similar_mod.BUNDLE_FILE).write_text(json.dumps(meta, indent=2))
    return folder
