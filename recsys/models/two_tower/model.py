"""The two-tower model: user tower and item tower, score = dot product of their embeddings.

Item towers (``model.item_tower``), shared with the history user towers:

- ``id`` (the seed's): an item-id embedding (row ``n_items`` is padding).
- ``content``: the id embedding plus :class:`ContentEncoder` of the movie's genres, decade, title
  words and tags (recsys.data.features). In training, ``model.id_dropout`` of the ids are hidden
  at each step, so the features alone learn to place a movie; a movie without a trained id
  (``n_items``: new since training, or below the cold-start filter) gets its vector from them.
  :meth:`TwoTower.catalogue_table` embeds any catalogue, today's included, with no retrain.
User towers (``model.user_tower``):

- ``sasrec`` (default): causal self-attention over the user's most recent positives in time order
  (recsys.models.two_tower.encoder: SASRec-style); the output at the last position is the user
  vector. Trained on every position: each prefix predicts the next positive.
- ``mean``: a linear map of the mean embedding of the recent positives (prefix means in training).
- ``id``: the seed's user-id embedding (needs the training-time user index; cannot score new users).

Histories are ``[B, H]`` item indices, oldest first, LEFT-padded with ``n_items`` so that the last
column is always the most recent positive.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from recsys.config import HISTORY_TOWERS, ModelConfig
from recsys.data.features import ItemFeatures, Vocabulary
from recsys.models.two_tower.content import CONTENT, ContentEncoder, content_tensors
from recsys.models.two_tower.encoder import SasrecEncoder


class TwoTower(nn.Module):
    """User tower and item tower over ``user_idx`` in [0, n_users) and ``item_idx`` in [0, n_items).

    The content item tower needs the ``vocabulary`` it reads and, when training, the trained
    catalogue's ``features`` (item_idx order; rebuilt from a checkpoint, they come with the weights).
    ``negatives``: features of movies known at training time without a trained id (below the
    cold-start filter), extra columns of the full softmax only, so that the features learn what
    the long tail the model will also rank looks like (not saved with the weights).
    """

    content_genres: Tensor  # content item tower's buffers: the trained catalogue's features
    content_decade: Tensor
    content_words: Tensor
    content_tags: Tensor
    content_year: Tensor

    def __init__(
        self,
        n_users: int,
        n_items: int,
        cfg: ModelConfig,
        item_log_prob: Tensor | None = None,
        vocabulary: Vocabulary | None = None,
        features: ItemFeatures | None = None,
        negatives: ItemFeatures | None = None,
    ) -> None:
        super().__init__()
        if n_users < 1 or n_items < 2:
            raise ValueError(f"need >= 1 user and >= 2 items, got {n_users} users, {n_items} items")
        self.n_users, self.n_items, self.cfg = n_users, n_items, cfg
        dim = cfg.embedding_dim
        self.item_emb = nn.Embedding(n_items + 1, dim, padding_idx=n_items)
        nn.init.normal_(self.item_emb.weight, std=0.05)
        with torch.no_grad():
            self.item_emb.weight[n_items].zero_()
        self.vocabulary = vocabulary
        if cfg.item_tower == "content":
            if vocabulary is None:
                raise ValueError("the content item tower needs the vocabulary of its features")
            self.content = ContentEncoder(vocabulary, dim)
            shapes = {
                "genres": (n_items, max(len(vocabulary.genres), 1)),
                "decade": (n_items,),
                "words": (n_items, vocabulary.max_words),
                "tags": (n_items, vocabulary.max_tags),
                "year": (n_items, 1),
            }
            given = content_tensors(features) if features is not None else [None] * len(CONTENT)
            for (name, shape), value in zip(shapes.items(), given, strict=True):
                dtype = torch.long if name in ("decade", "words", "tags") else torch.float32
                if value is not None and tuple(value.shape) != shape:
                    raise ValueError(
                        f"content feature {name} has shape {tuple(value.shape)}, expected {shape}"
                    )
                self.register_buffer(
                    f"content_{name}", torch.zeros(shape, dtype=dtype) if value is None else value
                )
        self.n_negatives = 0
        if negatives is not None:  # training only: movies without a trained id, as negatives
            if cfg.item_tower != "content":
                raise ValueError("only the content item tower can embed movies without a trained id")
            self.n_negatives = len(negatives.decade)
            for name, value in zip(CONTENT, content_tensors(negatives), strict=True):
                self.register_buffer(f"negative_{name}", value, persistent=False)
        if cfg.user_tower == "id":
            self.user_emb = nn.Embedding(n_users, dim)
            nn.init.normal_(self.user_emb.weight, std=0.05)
        elif cfg.user_tower == "sasrec":
            self.encoder = SasrecEncoder(cfg)
        else:
            self.project = nn.Linear(dim, dim)
        if item_log_prob is None:
            item_log_prob = torch.full((n_items,), -math.log(n_items))
        self.register_buffer("item_log_prob", item_log_prob.float(), persistent=True)

    @property
    def device(self) -> torch.device:
        """Where the weights are (training may run on CUDA; export and scoring read CPU copies)."""
        return self.item_emb.weight.device

    @property
    def reads_history(self) -> bool:
        return self.cfg.user_tower in HISTORY_TOWERS

    @property
    def reads_content(self) -> bool:
        return self.cfg.item_tower == "content"

    def _id_part(self, item_idx: Tensor) -> Tensor:
        """Id embeddings of ``item_idx`` (``n_items``: none), ids hidden at random in training."""
        ids = item_idx
        if self.training and self.reads_content and self.cfg.id_dropout > 0:
            hidden = torch.rand(item_idx.shape, device=item_idx.device) < self.cfg.id_dropout
            ids = item_idx.masked_fill(hidden, self.n_items)
        return self.item_emb(ids)

    def content_vectors(self, *features: Tensor) -> Tensor:
        """The content item tower's feature part of any movies: :data:`CONTENT` [M, ...] -> [M, D]."""
        return self.content(*features)

    def negative_vectors(self, sample: int = 0) -> tuple[Tensor, float] | None:
        """Vectors of the training-time ``negatives`` (features only), ``sample`` of them drawn
        uniformly (all when 0 or more than there are): ([S, D], log(E / S), the logit correction
        that lets each drawn one stand for E / S), or None without negatives."""
        if not self.n_negatives:
            return None
        rows = [getattr(self, f"negative_{name}") for name in CONTENT]
        if 0 < sample < self.n_negatives:
            pick = torch.randperm(self.n_negatives, device=rows[0].device)[:sample]
            return self.content_vectors(*(r[pick] for r in rows)), math.log(self.n_negatives / sample)
        return self.content_vectors(*rows), 0.0

    def _rows(self, item_idx: Tensor) -> Tensor:
        """Item vectors of trained-catalogue indices, any shape (``n_items`` = padding -> zeros)."""
        if not self.reads_content:
            return self.item_emb(item_idx)
        flat = item_idx.reshape(-1)
        # the content encoder once per distinct movie (a batch repeats popular ones many times)
        distinct, where = torch.unique(flat.clamp(max=self.n_items - 1), return_inverse=True)
        rows = (getattr(self, f"content_{name}")[distinct] for name in CONTENT)
        content = self.content_vectors(*rows)[where]
        out = (content + self._id_part(flat)) * (flat != self.n_items).unsqueeze(-1).to(content.dtype)
        return out.view(*item_idx.shape, -1)

    def catalogue_table(self, item_idx: Tensor, features: ItemFeatures) -> Tensor:
        """Vectors of any catalogue, plus a zero padding row: [M + 1, D].

        ``item_idx`` [M]: each movie's trained index, ``n_items`` for a movie the model never
        trained (the content tower places it by its ``features``; the id tower cannot: ValueError).
        """
        unknown = item_idx == self.n_items
        if not self.reads_content:
            if bool(unknown.any()):
                raise ValueError("the id item tower cannot embed a movie it was not trained on")
            vectors = self.item_emb(item_idx)
        else:
            content = (t.to(self.device) for t in content_tensors(features))
            vectors = self.content_vectors(*content) + self.item_emb(item_idx)
        return torch.cat([vectors, vectors.new_zeros(1, vectors.shape[1])])

    def sequence_vectors(
        self, history: Tensor, last_only: bool = False, table: Tensor | None = None
    ) -> Tensor:
        """History towers, every prefix at once: [B, H] -> [B, H, D] (position t reads items <= t).

        ``last_only``: the sasrec encoder computes the last position only (-> [B, 1, D]).
        ``table``: item vectors to read the history from (:meth:`catalogue_table`; its last row is
        the padding); the trained catalogue's by default.
        """
        if table is None:
            real, items = history != self.n_items, self._rows(history)
        else:
            real, items = history != table.shape[0] - 1, table[history]
        if self.cfg.user_tower == "sasrec":
            return self.encoder(items, real, last_only=last_only)
        counts = real.cumsum(dim=1).clamp(min=1).unsqueeze(-1).to(items.dtype)
        return self.project(items.cumsum(dim=1) / counts)

    def user_vectors(
        self, user_idx: Tensor | None = None, history: Tensor | None = None, table: Tensor | None = None
    ) -> Tensor:
        """User tower: user_idx [B] (id tower) or history [B, H] (history towers) -> [B, D]."""
        if self.reads_history:
            if history is None:
                raise ValueError(f"the {self.cfg.user_tower} user tower needs a history [B, H]")
            return self.sequence_vectors(history, last_only=True, table=table)[:, -1]
        if user_idx is None:
            raise ValueError("the id user tower needs user_idx [B]")
        return self.user_emb(user_idx)

    def item_vectors(self, item_idx: Tensor | None = None) -> Tensor:
        """Item tower: [M] -> [M, D]; all catalogue items [N, D] when item_idx is None."""
        if item_idx is None:
            if not self.reads_content:
                return self.item_emb.weight[: self.n_items]
            item_idx = torch.arange(self.n_items, device=self.item_emb.weight.device)
        return self._rows(item_idx)

    def score_all(self, user_idx: Tensor | None = None, history: Tensor | None = None) -> Tensor:
        """Dot-product scores of users against the whole catalogue: -> [B, N]."""
        return self.user_vectors(user_idx, history) @ self.item_vectors().T


def item_log_prob_from_counts(counts: Tensor) -> Tensor:
    """Log of each item's share of train positives: counts [N] (all >= 1) -> [N]."""
    counts = counts.double()
    return (counts / counts.sum()).log().float()


def checkpoint(model: TwoTower, extra: dict | None = None) -> dict:
    """Everything needed to rebuild the model: weights, sizes, the model config and the content
    tower's vocabulary."""
    return {
        "state_dict": model.state_dict(),
        "n_users": model.n_users,
        "n_items": model.n_items,
        "model_config": model.cfg.model_dump(),
        "vocabulary": model.vocabulary.as_dict() if model.vocabulary is not None else None,
        **(extra or {}),
    }


def from_checkpoint(state: dict) -> TwoTower:
    """Rebuild a TwoTower from :func:`checkpoint` output (weights loaded, eval mode)."""
    vocabulary = Vocabulary.from_dict(state["vocabulary"]) if state.get("vocabulary") else None
    model = TwoTower(state["n_users"], state["n_items"], ModelConfig(**state["model_config"]),
                     vocabulary=vocabulary)  # fmt: skip
    model.load_state_dict(state["state_dict"])
    return model.eval()
