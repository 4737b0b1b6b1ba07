"""Ranking metrics by the protocol of DESIGN.md, over ALL held-out users.

For a held-out (user, item+): score every catalogue item, exclude the user's already-seen positives,
rank = number of items scoring strictly higher than item+. Recall@K = mean 1[rank < K];
NDCG@K = mean 1[rank < K] / log2(rank + 2). A held-out row whose item is unknown to train
(``item_idx == -1``, protocol step 5) cannot be ranked: it gets rank N (a miss at every K).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

KS = (10, 50, 100)
ScoreFn = Callable[[np.ndarray], np.ndarray]  # user_idx [B] -> scores [B, N]


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of held-out items ranked in the top k (0-based ranks); 0.0 for no users."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return float(np.mean(ranks < k)) if len(ranks) else 0.0


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean 1[rank < k] / log2(rank + 2) with one relevant item per user; 0.0 for no users."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not len(ranks):
        return 0.0
    gains = np.where(ranks < k, 1.0 / np.log2(ranks.astype(np.float64) + 2.0), 0.0)
    return float(gains.mean())


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """Recall and NDCG at every k, named ``recall_at_<k>`` and ``ndcg_at_<k>``."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall_at_{k}"] = recall_at_k(ranks, k)
        out[f"ndcg_at_{k}"] = ndcg_at_k(ranks, k)
    return out


def ranks_of_targets(scores: np.ndarray, targets: np.ndarray, seen: Sequence[np.ndarray]) -> np.ndarray:
    """Rank of each row's target among unseen items: scores [B, N], targets [B] -> ranks [B].

    ``seen[b]`` holds item indices excluded for row b (never the target itself). A target of -1
    (an item unknown to the model) gets rank N, a miss at every k <= N.
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    rows = np.repeat(np.arange(len(seen)), [len(s) for s in seen])
    if len(rows):
        scores[rows, np.concatenate(seen).astype(np.int64)] = -np.inf
    targets = np.asarray(targets, dtype=np.int64)
    known = targets >= 0
    target_scores = scores[np.arange(len(targets)), np.where(known, targets, 0)]
    ranks = (scores > target_scores[:, None]).sum(axis=1)
    return np.where(known, ranks, scores.shape[1])


def evaluate_ranks(
    score_fn: ScoreFn, heldout: pd.DataFrame, seen: Sequence[np.ndarray], batch_size: int = 1024
) -> np.ndarray:
    """Ranks for every held-out row (columns user_idx, item_idx); ``seen`` indexed by user_idx."""
    users = heldout["user_idx"].to_numpy()
    items = heldout["item_idx"].to_numpy()
    ranks = np.empty(len(users), dtype=np.int64)
    for start in range(0, len(users), batch_size):
        sl = slice(start, start + batch_size)
        scores = score_fn(users[sl])
        ranks[sl] = ranks_of_targets(scores, items[sl], [seen[u] for u in users[sl]])
    return ranks


def evaluate(
    score_fn: ScoreFn,
    heldout: pd.DataFrame,
    seen: Sequence[np.ndarray],
    batch_size: int = 1024,
    ks: Sequence[int] = KS,
) -> dict[str, float]:
    """Recall@K and NDCG@K of ``score_fn`` over all held-out rows."""
    return metrics_from_ranks(evaluate_ranks(score_fn, heldout, seen, batch_size), ks)


def bootstrap_interval(
    ranks: np.ndarray,
    metric: Callable[[np.ndarray, int], float],
    k: int,
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% bootstrap interval over users of ``metric(ranks, k)``."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ranks), size=(n_resamples, len(ranks)))
    values = np.array([metric(ranks[d], k) for d in draws])
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))
