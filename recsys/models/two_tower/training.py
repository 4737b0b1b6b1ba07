"""Train the two-tower model: sampled epochs, per-epoch validation, early stopping on NDCG@10.

History towers (sasrec, mean) train on windows that cover each user's whole train sequence: every
position of every window predicts the next positive, so a user is many examples per epoch. The id
tower trains on (user, item) pairs. Both go through one loss: full softmax over the catalogue, or
sampled softmax (in-batch + catalogue negatives with logQ correction, optional hard negatives).
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from recsys.config import Settings
from recsys.data.features import ItemFeatures, Vocabulary
from recsys.data.prepared import Prepared
from recsys.errors import ConfigError
from recsys.evaluation.baselines import ease_weights
from recsys.models.two_tower.evaluation import Evaluation
from recsys.models.two_tower.hardware import Hardware
from recsys.models.two_tower.loss import full_softmax_loss, sampled_softmax_loss
from recsys.models.two_tower.model import TwoTower, item_log_prob_from_counts
from recsys.models.two_tower.sequences import Examples, id_examples, window_examples

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


def uses_full_softmax(settings: Settings, n_items: int) -> bool:
    """model.softmax resolved: 'auto' is full while the catalogue is small enough."""
    mode = settings.model.softmax
    return mode == "full" or (mode == "auto" and n_items <= settings.model.full_softmax_max_items)


def content_features(prepared: Prepared, settings: Settings) -> tuple[Vocabulary | None, ItemFeatures | None]:
    """The content item tower's vocabulary, fitted on the trained catalogue, and that catalogue's
    features (None, None for the id item tower)."""
    if settings.model.item_tower != "content":
        return None, None
    vocabulary = Vocabulary.fit(prepared.catalogue, settings.model.content_min_count)
    return vocabulary, vocabulary.encode(prepared.catalogue)


def new_model(prepared: Prepared, settings: Settings, tail: pd.DataFrame | None = None) -> TwoTower:
    """An untrained TwoTower for ``prepared`` with ``settings.model``: the catalogue's popularity
    for logQ, and for the content item tower its vocabulary, features and tail negatives
    (``tail``, default ``prepared.tail``)."""
    counts = torch.as_tensor(prepared.catalogue["train_count"].to_numpy(), dtype=torch.float64)
    vocabulary, features = content_features(prepared, settings)
    negatives, tail = None, prepared.tail if tail is None else tail
    if vocabulary is not None and settings.model.tail_negatives and tail is not None and len(tail):
        negatives = vocabulary.encode(tail)
    log_prob = item_log_prob_from_counts(counts)
    return TwoTower(
        prepared.n_users, prepared.n_items, settings.model, log_prob, vocabulary, features, negatives
    )


class NegativeSampler:
    """Catalogue negatives, uniform or proportional to count^0.75, with their log-probabilities."""

    def __init__(self, counts: np.ndarray, distribution: str, gen: torch.Generator) -> None:
        weights = np.ones(len(counts)) if distribution == "uniform" else np.power(counts, 0.75)
        self.probs = torch.as_tensor(weights / weights.sum(), dtype=torch.float64)
        self.log_probs = self.probs.log().float()
        self.gen = gen

    def draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n item indices (with replacement) and the log of each one's sampling probability."""
        items = torch.multinomial(self.probs, n, replacement=True, generator=self.gen)
        return items, self.log_probs[items]


@dataclass
class LossContext:
    """What a training step needs besides the batch: sampler, hard-negative lists, EASE teacher."""

    full: bool
    hardware: Hardware = field(default_factory=lambda: Hardware(torch.device("cpu"), torch.float32))
    sampler: NegativeSampler | None = None
    hard_lists: torch.Tensor | None = None  # [n_users, P] item_idx, padded with n_items
    teacher: torch.Tensor | None = None  # [n_items + 1, n_items] EASE rows (last row zero)


def teacher_scores(ex: Examples, idx: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """EASE scores of every prefix of windows ``idx``: [B, H, N], the prefix's own items -inf.

    Position t's prefix is the window's earlier items (``before``) plus its inputs up to t, so
    its score row is base + cumulative sum of the teacher rows [N + 1, N] (pad row zero).
    """
    assert ex.teacher_base is not None and ex.before_mask is not None
    rows, n = ex.inputs[idx], teacher.shape[1]
    scores = ex.teacher_base[idx].unsqueeze(1) + teacher[rows].cumsum(dim=1)
    seen = torch.nn.functional.one_hot(rows, n + 1)[..., :n].cumsum(dim=1) > 0
    seen = seen | ex.before_mask[idx].unsqueeze(1)
    return scores.masked_fill(seen, float("-inf"))


def _hard_negatives(
    ctx: LossContext, owners: torch.Tensor, n: int, gen: torch.Generator
) -> torch.Tensor | None:
    if ctx.hard_lists is None or n == 0:
        return None
    pool = ctx.hard_lists[owners]
    picks = torch.randint(0, pool.shape[1], (len(owners), n), generator=gen)
    return pool.gather(1, picks)


def _step_loss(
    model: TwoTower,
    ex: Examples,
    idx: torch.Tensor,
    settings: Settings,
    ctx: LossContext,
    gen: torch.Generator,
) -> torch.Tensor:
    """Loss of the examples ``idx``: every real target position is one query. The batch is cut
    from the examples on the CPU and moved to the model's device."""
    dev, dtype = ctx.hardware.device, ctx.hardware.dtype
    rows, targets = ex.inputs[idx].to(dev), ex.targets[idx]
    if model.reads_history:
        mask = targets != model.n_items
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            queries = model.sequence_vectors(rows)[mask.to(dev)].float()
        tgt = targets[mask].to(dev)
        owners = ex.users[idx].unsqueeze(1).expand_as(targets)[mask]
    else:
        queries, tgt, owners = model.user_vectors(rows), targets.to(dev), ex.users[idx]
    cfg = settings.train
    if ctx.full:
        teacher = None
        if ctx.teacher is not None:
            teacher = teacher_scores(ex, idx, ctx.teacher)[mask].to(dev)
        return full_softmax_loss(
            model, queries, tgt, teacher, cfg.distill_weight, cfg.distill_temperature, dtype
        )
    n_neg = settings.model.num_sampled_negatives
    n_hard = int(round(n_neg * cfg.hard_negative_ratio)) if ctx.hard_lists is not None else 0
    sampled = log_q = hard = None
    if n_neg - n_hard > 0 and ctx.sampler is not None:
        sampled, log_q = (t.to(dev) for t in ctx.sampler.draw(n_neg - n_hard))
    if (picked := _hard_negatives(ctx, owners, n_hard, gen)) is not None:
        hard = picked.to(dev)
    return sampled_softmax_loss(model, queries, tgt, sampled, log_q, hard, dtype)


def _epoch_order(ex: Examples, max_targets: int, gen: torch.Generator) -> torch.Tensor:
    """Shuffled example indices, cut once ``max_targets`` predicted positives are covered."""
    order = torch.randperm(len(ex.inputs), generator=gen)
    covered = ex.n_targets[order].cumsum(0)
    return order[: int(torch.searchsorted(covered, max_targets, right=True)) or 1]


def _train_epoch(
    model: TwoTower,
    optimizer: torch.optim.Optimizer,
    ex: Examples,
    settings: Settings,
    ctx: LossContext,
    gen: torch.Generator,
    desc: str,
) -> tuple[float, int]:
    """One pass over a fresh sample of examples; returns (mean loss, predicted positives)."""
    cfg = settings.train
    order = _epoch_order(ex, cfg.max_interactions, gen)
    model.train()
    losses = []
    for idx in tqdm(order.split(cfg.batch_size), desc=desc, disable=not cfg.progress_bar, leave=False):
        loss = _step_loss(model, ex, idx, settings, ctx, gen)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses)), int(ex.n_targets[order].sum())


def _loss_context(
    prepared: Prepared,
    settings: Settings,
    model: TwoTower,
    ex: Examples,
    gen: torch.Generator,
    hard_lists: np.ndarray | None,
) -> LossContext:
    """Resolve softmax mode, sampler, hard negatives and the distillation teacher."""
    cfg, full = settings.train, uses_full_softmax(settings, model.n_items)
    if cfg.distill_weight > 0 and not (full and model.reads_history):
        raise ConfigError(
            "train.distill_weight > 0 needs a history tower with the full softmax "
            "(model.user_tower=sasrec|mean, model.softmax=full or auto on a small catalogue)"
        )
    if cfg.hard_negative_ratio > 0 and full:
        raise ConfigError(
            "train.hard_negative_ratio > 0 needs model.softmax=sampled: the full "
            "softmax already uses every item as a negative"
        )
    ctx = LossContext(full=full)
    if not full:
        counts = prepared.catalogue["train_count"].to_numpy(dtype=np.float64)
        ctx.sampler = NegativeSampler(counts, settings.model.negative_distribution, gen)
    if cfg.hard_negative_ratio > 0:
        if hard_lists is None:
            log.warning(
                "train.hard_negative_ratio=%s but no champion lists: naive negatives only",
                cfg.hard_negative_ratio,
            )
        else:
            ctx.hard_lists = torch.as_tensor(hard_lists, dtype=torch.long)
    if cfg.distill_weight > 0:
        weights = ease_weights(
            prepared.split("train"), prepared.n_users, prepared.n_items, cfg.distill_ease_l2
        )
        teacher = np.vstack([weights, np.zeros((1, model.n_items))]).astype(np.float32)
        ctx.teacher = torch.from_numpy(teacher)
        ex.attach_teacher_base(ctx.teacher)
    return ctx


def train(
    prepared: Prepared,
    settings: Settings,
    on_epoch: Callable[[dict], None] | None = None,
    hard_lists: np.ndarray | None = None,
    validation: Prepared | None = None,
    tail: pd.DataFrame | None = None,
) -> TrainResult:
    """Train on ``prepared``; return the epoch with the best validation NDCG@10.

    ``on_epoch`` receives {"epoch", "loss", "valid_<metric>"...} after each epoch (for MLflow).
    ``hard_lists`` [n_users, P]: item_idx of the champion's list below its top, per user_idx
    (padded with n_items), for ``train.hard_negative_ratio``.
    ``validation``: the data the epochs are judged on, when not ``prepared`` itself: the same
    split over a wider catalogue (recsys.data.time_split.open_catalogue, content tower only).
    Trains on ``train.device`` with the loss's products in ``train.precision``; the model comes back
    on the CPU. With ``train.valid_users``, each epoch is judged on that sample of users, and the
    chosen one on all of them (``valid_metrics``).
    ``tail``: movies known at training time outside the trained catalogue (columns title, genres
    and, optionally, tags), the negatives of ``model.tail_negatives``; default ``prepared.tail``.
    Raises ConfigError for settings that cannot go together.
    """
    if settings.train.threads:
        torch.set_num_threads(settings.train.threads)
    cfg, hardware = settings.train, Hardware.resolve(settings.train)
    log.info("training on %s", hardware.describe())
    gen = set_seed(cfg.seed)
    pairs_np = prepared.split("train")[["user_idx", "item_idx"]].to_numpy(dtype=np.int64)
    model = new_model(prepared, settings, tail).to(hardware.device)
    length = settings.model.history_length
    ex = window_examples(pairs_np, prepared.n_items, length) if model.reads_history else id_examples(pairs_np)
    ctx = _loss_context(prepared, settings, model, ex, gen, hard_lists)
    ctx.hardware = hardware
    judged = validation or prepared
    judge = Evaluation(model, judged, "valid", cfg.eval_batch_size, cfg.valid_users, cfg.seed)
    result = _fit(model, ex, ctx, gen, settings, lambda: judge.run()[0], on_epoch or (lambda row: None))
    if len(judge.heldout) < len(judge.view.heldout):  # epochs judged on a sample: now all users
        result.valid_metrics = Evaluation(model, judged, "valid", cfg.eval_batch_size).run()[0]
    model.to("cpu")
    return result


def _fit(
    model: TwoTower,
    ex: Examples,
    ctx: LossContext,
    gen: torch.Generator,
    settings: Settings,
    validate: Callable[[], dict[str, float]],
    on_epoch: Callable[[dict], None],
) -> TrainResult:
    """The epochs: train, validate, keep the best state; early stop on patience or time budget."""
    cfg = settings.train
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    result = TrainResult(model=model, best_epoch=0, valid_metrics={SELECTION_METRIC: -1.0})
    best_state, waited = copy.deepcopy(model.state_dict()), 0
    budget = cfg.max_minutes * 60 if cfg.max_minutes else None
    started = time.perf_counter()
    for epoch in range(1, cfg.max_epochs + 1):
        tick = time.perf_counter()
        loss, n_pairs = _train_epoch(
            model, optimizer, ex, settings, ctx, gen, f"epoch {epoch}/{cfg.max_epochs}"
        )
        model.eval()
        tock = time.perf_counter()
        metrics = validate()
        row = {"epoch": epoch, "loss": loss, "pairs": n_pairs, "train_seconds": tock - tick}
        row |= {"valid_seconds": time.perf_counter() - tock, **{f"valid_{k}": v for k, v in metrics.items()}}
        result.epochs.append(row)
        log.info("epoch %d loss %.4f valid ndcg@10 %.4f recall@10 %.4f", epoch, loss, metrics["ndcg_at_10"],
                 metrics["recall_at_10"])  # fmt: skip
        on_epoch(row)
        if metrics[SELECTION_METRIC] > result.valid_metrics[SELECTION_METRIC]:
            result.best_epoch, result.valid_metrics = epoch, metrics
            best_state, waited = copy.deepcopy(model.state_dict()), 0
        elif (waited := waited + 1) >= cfg.patience:
            log.info("early stop after epoch %d (best %d)", epoch, result.best_epoch)
            break
        if budget is not None and time.perf_counter() - started >= budget:
            log.info("time budget of %.1f min spent after epoch %d (best %d)", cfg.max_minutes, epoch,
                     result.best_epoch)  # fmt: skip
            break
    model.load_state_dict(best_state)
    model.eval()
    return result
