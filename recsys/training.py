"""Train the two-tower model: sampled epochs, per-epoch validation, early stopping on NDCG@10."""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from recsys.config import Settings
from recsys.data import Prepared, seen_lists
from recsys.evaluation import evaluate, evaluate_ranks, metrics_from_ranks
from recsys.model import Batch, TwoTower, item_log_prob_from_counts

log = logging.getLogger(__name__)
SELECTION_METRIC = "ndcg_at_10"


@dataclass
class TrainResult:
    """The best model (by validation NDCG@10) and what happened on the way."""

    model: TwoTower
    epochs: list[dict] = field(default_factory=list)  # per epoch: loss and validation metrics
    best_epoch: int = 0
    valid_metrics: dict[str, float] = field(default_factory=dict)


def set_seed(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator for epoch sampling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def build_histories(pairs: np.ndarray, n_users: int, n_items: int, length: int) -> torch.Tensor:
    """Each user's last ``length`` items, time-ordered rows of (user_idx, item_idx) -> [n_users, length].

    Padded on the left with ``n_items`` (the history tower's padding index).
    """
    out = np.full((n_users, length), n_items, dtype=np.int64)
    users, items = pairs[:, 0], pairs[:, 1]
    bounds = np.searchsorted(users, np.arange(n_users + 1))
    for u in range(n_users):
        recent = items[bounds[u]:bounds[u + 1]][-length:]
        if len(recent):
            out[u, length - len(recent):] = recent
    return torch.from_numpy(out)


class Scorer:
    """Score users against the catalogue with a model in eval mode (numpy in, numpy out)."""

    def __init__(self, model: TwoTower, histories: torch.Tensor | None) -> None:
        self.model, self.histories = model, histories

    @torch.no_grad()
    def __call__(self, user_idx: np.ndarray) -> np.ndarray:
        users = torch.as_tensor(user_idx, dtype=torch.long)
        history = None if self.histories is None else self.histories[users]
        return self.model.score_all(users, history).numpy()


def _history_for(model: TwoTower, histories: torch.Tensor, users: torch.Tensor,
                 items: torch.Tensor) -> torch.Tensor | None:
    if model.cfg.user_tower != "history":
        return None
    history = histories[users]
    # Hide the target from its own history so the tower cannot just look it up.
    return history.masked_fill(history == items.unsqueeze(1), model.n_items)


def epoch_sample(n_pairs: int, max_interactions: int, gen: torch.Generator) -> torch.Tensor:
    """Indices of at most ``max_interactions`` of ``n_pairs`` pairs, drawn afresh (shuffled) each call."""
    return torch.randperm(n_pairs, generator=gen)[:max_interactions]


def _train_epoch(model: TwoTower, optimizer: torch.optim.Optimizer, pairs: torch.Tensor,
                 histories: torch.Tensor, settings: Settings, gen: torch.Generator,
                 desc: str) -> tuple[float, int]:
    """One pass over a fresh sample of train pairs; returns (mean loss, pairs used)."""
    cfg = settings.train
    order = epoch_sample(len(pairs), cfg.max_interactions, gen)
    n = len(order)
    n_neg = settings.model.num_sampled_negatives
    model.train()
    losses = []
    steps = range(0, n - 1, cfg.batch_size)
    for start in tqdm(steps, desc=desc, disable=not cfg.progress_bar, leave=False):
        chunk = pairs[order[start:start + cfg.batch_size]]
        if len(chunk) < 2:
            continue
        users, items = chunk[:, 0], chunk[:, 1]
        batch = Batch(users, items, _history_for(model, histories, users, items))
        sampled = torch.randint(0, model.n_items, (n_neg,), generator=gen) if n_neg else None
        _, loss = model(batch, sampled)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses)), n


def train(prepared: Prepared, settings: Settings,
          on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train on ``prepared``; return the epoch with the best validation NDCG@10.

    ``on_epoch`` receives {"epoch", "loss", "valid_<metric>"...} after each epoch (for MLflow).
    """
    gen = set_seed(settings.train.seed)
    train_df = prepared.split("train")
    pairs_np = train_df[["user_idx", "item_idx"]].to_numpy(dtype=np.int64)
    counts = torch.as_tensor(prepared.catalogue["train_count"].to_numpy(), dtype=torch.float64)
    model = TwoTower(prepared.n_users, prepared.n_items, settings.model,
                     item_log_prob_from_counts(counts))
    histories = build_histories(pairs_np, prepared.n_users, prepared.n_items,
                                settings.model.history_length)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.train.learning_rate,
                                 weight_decay=settings.train.weight_decay)
    seen = seen_lists(train_df, prepared.n_users)
    valid = prepared.split("valid")
    pairs = torch.from_numpy(pairs_np)
    result = TrainResult(model=model, best_epoch=0, valid_metrics={SELECTION_METRIC: -1.0})
    best_state, waited = copy.deepcopy(model.state_dict()), 0
    for epoch in range(1, settings.train.max_epochs + 1):
        loss, n_pairs = _train_epoch(model, optimizer, pairs, histories, settings, gen,
                            f"epoch {epoch}/{settings.train.max_epochs}")
        model.eval()
        metrics = evaluate(Scorer(model, _eval_histories(model, histories)), valid, seen,
                           settings.train.eval_batch_size)
        row = {"epoch": epoch, "loss": loss, "pairs": n_pairs, **{f"valid_{k}": v for k, v in metrics.items()}}
        result.epochs.append(row)
        log.info("epoch %d loss %.4f valid ndcg@10 %.4f recall@10 %.4f", epoch, loss,
                 metrics["ndcg_at_10"], metrics["recall_at_10"])
        if on_epoch:
            on_epoch(row)
        if metrics[SELECTION_METRIC] > result.valid_metrics[SELECTION_METRIC]:
            result.best_epoch, result.valid_metrics = epoch, metrics
            best_state, waited = copy.deepcopy(model.state_dict()), 0
        else:
            waited += 1
            if waited >= settings.train.patience:
                log.info("early stop after epoch %d (best %d)", epoch, result.best_epoch)
                break
    model.load_state_dict(best_state)
    model.eval()
    return result


def _eval_histories(model: TwoTower, histories: torch.Tensor) -> torch.Tensor | None:
    return histories if model.cfg.user_tower == "history" else None


def serving_histories(prepared: Prepared, length: int, splits: tuple[str, ...]) -> torch.Tensor:
    """Histories from the given splits (time-ordered), e.g. ("train", "valid") for test scoring."""
    frame = prepared.interactions[prepared.interactions["split"].isin(splits)]
    frame = frame.sort_values(["user_idx", "timestamp", "movie_id"], kind="mergesort")
    pairs = frame[["user_idx", "item_idx"]].to_numpy(dtype=np.int64)
    return build_histories(pairs, prepared.n_users, prepared.n_items, length)


def evaluate_model(model: TwoTower, prepared: Prepared, split: str,
                   batch_size: int = 1024) -> tuple[dict[str, float], np.ndarray]:
    """Metrics and per-user ranks of ``model`` on 'valid' (seen = train) or 'test' (seen = train+valid)."""
    before = ("train",) if split == "valid" else ("train", "valid")
    seen_pairs = prepared.interactions[prepared.interactions["split"].isin(before)]
    seen = seen_lists(seen_pairs, prepared.n_users)
    histories = None
    if model.cfg.user_tower == "history":
        histories = serving_histories(prepared, model.cfg.history_length, before)
    ranks = evaluate_ranks(Scorer(model, histories), prepared.split(split), seen, batch_size)
    return metrics_from_ranks(ranks), ranks
