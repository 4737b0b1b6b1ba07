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

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.config import SimilarConfig
from recsys.data.features import ItemFeatures

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
