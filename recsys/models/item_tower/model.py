"""The "similar movies" item tower, trained with a triplet loss on the pairwise table (recsys.data.pairs).

Tower: (id embedding + the shared content encoder of recsys.models.two_tower.content over genres,
decade, release year, title words and tags) -> a residual MLP -> a vector (unit length for the cosine
distance). The training catalogue's features live in buffers, so training needs nothing but the item
index. Row N of the id embedding (N: the catalogue size) is a learned "unknown movie": with
``id_dropout`` a share of the rows in each step read it instead of their own id, so the tower learns
to place a movie from its features alone, and a movie that was not in the training catalogue (too
rarely rated, or new since) gets its vector from its features (:meth:`ItemTower.embed` with the
unknown row; ``item_tower.onnx`` of the bundle). Siamese: anchor, positive and negative go through
the same tower. Given another model's item vectors (the two-tower champion's), the id embeddings
start from them and the features and the MLP's output start at zero: the untrained tower then ranks
as those vectors do, and training fine-tunes them (benchmarks/similar.py: from scratch the triplets
alone do not reach the two-tower's vectors; fine-tuned they beat them).

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
from recsys.data.features import ItemFeatures, Vocabulary
from recsys.models.two_tower.content import CONTENT, ContentEncoder, content_tensors

log = logging.getLogger(__name__)


class ItemTower(nn.Module):
    """item_idx [B] -> vectors [B, D] (see the module docstring)."""

    def __init__(
        self,
        vocabulary: Vocabulary,
        features: ItemFeatures,
        cfg: SimilarConfig,
        init_vectors: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.cfg, self.vocabulary = cfg, vocabulary
        n, dim = len(features.decade), cfg.embedding_dim
        self.n_items = n
        for name, array in zip(CONTENT, content_tensors(features), strict=True):
            self.register_buffer(name, array)
        init_dim = dim if init_vectors is None else int(init_vectors.shape[1])
        self.id_emb = nn.Embedding(n + 1, init_dim)  # row n: the unknown movie
        # another width (the two-tower's embedding_dim differs): a learned projection, orthogonal at
        # the start (dot products kept when it widens; a random projection when it narrows)
        self.id_proj: nn.Module = nn.Identity()
        if init_dim != dim:
            self.id_proj = nn.Linear(init_dim, dim, bias=False)
            nn.init.orthogonal_(self.id_proj.weight)
        self.content = ContentEncoder(vocabulary, dim)
        nn.init.normal_(self.id_emb.weight, std=0.05)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm = nn.LayerNorm(dim)
        if init_vectors is not None:
            # Fine-tuning: the features and the MLP's output start at zero, so the starting tower
            # ranks movies as the given vectors do (up to LayerNorm's centring) and training moves
            # away from them only where the triplets ask for it.
            with torch.no_grad():
                self.id_emb.weight[:n].copy_(torch.as_tensor(initial_ids(init_vectors, cfg.seed)))
                self.id_emb.weight[n].zero_()
                content = self.content
                inputs = (content.genre_proj, content.year_proj, content.decade_emb, content.word_emb)
                for weight in (*(m.weight for m in inputs), content.tag_emb.weight):
                    weight.zero_()  # the content's hidden layer keeps its random start: it must learn
                for last in (self.mlp[2], self.content.mlp[2]):
                    assert isinstance(last, nn.Linear)
                    last.weight.zero_()
                    last.bias.zero_()

    @property
    def unknown(self) -> int:
        """The id row of a movie without a trained id."""
        return self.n_items

    def features_of(self, item_idx: Tensor) -> list[Tensor]:
        """The training catalogue's :data:`~recsys.models.two_tower.content.CONTENT` rows."""
        return [getattr(self, name)[item_idx] for name in CONTENT]

    def embed(self, ids: Tensor, *features: Tensor) -> Tensor:
        """Vectors from id rows (:attr:`unknown` for a movie without one) and content features."""
        x = self.id_proj(self.id_emb(ids)) + self.content(*features)
        x = self.norm(x + self.mlp(x))
        return F.normalize(x, dim=-1) if self.cfg.distance == "cosine" else x

    def forward(self, item_idx: Tensor) -> Tensor:
        ids = item_idx
        if self.training and self.cfg.id_dropout > 0:
            hidden = torch.rand(len(item_idx), device=item_idx.device) < self.cfg.id_dropout
            ids = torch.where(hidden, torch.full_like(item_idx, self.unknown), item_idx)
        return self.embed(ids, *self.features_of(item_idx))

    def all_vectors(self) -> Tensor:
        return self(torch.arange(self.n_items))

    def content_vectors(self) -> Tensor:
        """Every training movie's vector from its features alone, as a movie without a trained id
        gets it (the cold-start path; benchmarks/similar.py scores the test queries with it)."""
        idx = torch.arange(self.n_items)
        return self.embed(torch.full_like(idx, self.unknown), *self.features_of(idx))


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
