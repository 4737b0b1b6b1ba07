"""The two-tower model: user tower and item tower, score = dot product of their embeddings.

Seed variant: user ID embedding and item ID embedding (dim 64), trained with in-batch negatives and a
softmax cross-entropy over logits ``dot / temperature``. Options (all settings in ModelConfig):
logQ correction (subtract log of each negative's sampling probability, so popular items are not
over-penalised), uniform catalogue negatives mixed into the batch, and a history-based user tower
(user ID embedding plus the mean embedding of the user's recent items) that can score users whose
history changed since training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.config import ModelConfig


@dataclass
class Batch:
    """One training batch. Shapes: user_idx [B], item_idx [B], history [B, H] (pad = n_items)."""

    user_idx: Tensor
    item_idx: Tensor
    history: Tensor | None = None


class TwoTower(nn.Module):
    """User tower and item tower over dense indices ``user_idx`` in [0, n_users), ``item_idx`` in [0, n_items)."""

    def __init__(self, n_users: int, n_items: int, cfg: ModelConfig,
                 item_log_prob: Tensor | None = None) -> None:
        super().__init__()
        if n_users < 1 or n_items < 2:
            raise ValueError(f"need >= 1 user and >= 2 items, got {n_users} users, {n_items} items")
        self.n_users, self.n_items, self.cfg = n_users, n_items, cfg
        self.user_emb = nn.Embedding(n_users, cfg.embedding_dim)
        self.item_emb = nn.Embedding(n_items, cfg.embedding_dim)
        if cfg.user_tower == "history":
            # Index n_items is padding: it contributes nothing to the mean.
            self.history_emb = nn.Embedding(n_items + 1, cfg.embedding_dim, padding_idx=n_items)
            nn.init.normal_(self.history_emb.weight, std=0.05)
            with torch.no_grad():
                self.history_emb.weight[n_items].zero_()
        nn.init.normal_(self.user_emb.weight, std=0.05)
        nn.init.normal_(self.item_emb.weight, std=0.05)
        if item_log_prob is None:
            item_log_prob = torch.full((n_items,), -math.log(n_items))
        self.register_buffer("item_log_prob", item_log_prob.float(), persistent=True)

    def user_vectors(self, user_idx: Tensor, history: Tensor | None = None) -> Tensor:
        """User tower: [B] (and [B, H] history for the history tower) -> [B, D]."""
        vectors = self.user_emb(user_idx)
        if self.cfg.user_tower == "history":
            if history is None:
                raise ValueError("the history user tower needs a history tensor [B, H]")
            mask = (history != self.n_items).unsqueeze(-1).to(vectors.dtype)
            summed = (self.history_emb(history) * mask).sum(dim=1)
            vectors = vectors + summed / mask.sum(dim=1).clamp(min=1.0)
        return vectors

    def item_vectors(self, item_idx: Tensor | None = None) -> Tensor:
        """Item tower: [M] -> [M, D]; all catalogue items [N, D] when item_idx is None."""
        return self.item_emb.weight if item_idx is None else self.item_emb(item_idx)

    def score_all(self, user_idx: Tensor, history: Tensor | None = None) -> Tensor:
        """Dot-product scores of users against the whole catalogue: [B] -> [B, N]."""
        return self.user_vectors(user_idx, history) @ self.item_vectors().T

    def forward(self, batch: Batch, sampled: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Return (logits [B, B + M], loss) for a batch of positives and M sampled negatives."""
        users = self.user_vectors(batch.user_idx, batch.history)
        columns = batch.item_idx if sampled is None else torch.cat([batch.item_idx, sampled])
        logits = users @ self.item_vectors(columns).T / self.cfg.temperature
        if self.cfg.logq_correction:
            logits = logits - self._log_q(batch.item_idx.numel(), columns, sampled)
        # Another row's positive that is this row's own item is not a negative (accidental hit).
        same = batch.item_idx.unsqueeze(1) == columns.unsqueeze(0)
        diagonal = torch.zeros_like(same)
        diagonal[:, : batch.item_idx.numel()] = torch.eye(batch.item_idx.numel(), dtype=torch.bool)
        logits = logits.masked_fill(same & ~diagonal, float("-inf"))
        target = torch.arange(batch.item_idx.numel(), device=logits.device)
        return logits, F.cross_entropy(logits, target)

    def _log_q(self, batch_size: int, columns: Tensor, sampled: Tensor | None) -> Tensor:
        """Log expected count of each column's item among the negatives: [B + M]."""
        in_batch = self.item_log_prob[columns[:batch_size]] + math.log(batch_size)
        if sampled is None:
            return in_batch
        uniform = torch.full((sampled.numel(),), math.log(sampled.numel() / self.n_items),
                             device=columns.device)
        return torch.cat([in_batch, uniform])


def item_log_prob_from_counts(counts: Tensor) -> Tensor:
    """Log of each item's share of train positives: counts [N] (all >= 1) -> [N]."""
    counts = counts.double()
    return (counts / counts.sum()).log().float()


def checkpoint(model: TwoTower, extra: dict | None = None) -> dict:
    """Everything needed to rebuild the model: weights, sizes and the model config."""
    return {
        "state_dict": model.state_dict(),
        "n_users": model.n_users,
        "n_items": model.n_items,
        "model_config": model.cfg.model_dump(),
        **(extra or {}),
    }


def from_checkpoint(state: dict) -> TwoTower:
    """Rebuild a TwoTower from :func:`checkpoint` output (weights loaded, eval mode)."""
    model = TwoTower(state["n_users"], state["n_items"], ModelConfig(**state["model_config"]))
    model.load_state_dict(state["state_dict"])
    return model.eval()
