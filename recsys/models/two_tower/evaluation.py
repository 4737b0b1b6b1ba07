"""A two-tower model judged on a held-out split (protocol step 6): users scored against the whole
catalogue, the held-out positives' ranks, and the metrics (recsys.evaluation.metrics).

Scoring runs on the model's device, a batch of users at a time; a catalogue wider than the trained
one (recsys.data.time_split.open_catalogue) is scored through :func:`catalogue_table`, which the
content item tower can do. ``users``: a fixed sample of the split's users (the per-epoch check of
``train.valid_users``), all by default.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from recsys.data.prepared import Prepared
from recsys.data.views import SplitView
from recsys.evaluation.metrics import evaluate_ranks, metrics_from_ranks
from recsys.models.two_tower.model import TwoTower
from recsys.models.two_tower.sequences import build_histories


class Scorer:
    """Score users against the catalogue with a model in eval mode (numpy in, numpy out).

    ``table``: the item vectors of another catalogue than the trained one, with a padding row
    last (:func:`catalogue_table`); the histories then index it.
    """

    def __init__(
        self, model: TwoTower, histories: torch.Tensor | None, table: torch.Tensor | None = None
    ) -> None:
        self.model, self.histories = model, histories
        self.table = None if table is None else table.to(model.device)

    @torch.no_grad()
    def __call__(self, user_idx: np.ndarray) -> np.ndarray:
        device = self.model.device
        users = torch.as_tensor(user_idx, dtype=torch.long)
        history = None if self.histories is None else self.histories[users].to(device)
        users = users.to(device)
        if self.table is None:
            return self.model.score_all(users, history).cpu().numpy()
        vectors = self.model.user_vectors(users, history, self.table)
        return (vectors @ self.table[:-1].T).cpu().numpy()


@torch.no_grad()
def catalogue_table(model: TwoTower, catalogue: pd.DataFrame) -> torch.Tensor:
    """Item vectors of ``catalogue`` (its ``item_idx`` >= the model's ``n_items``: movies it never
    trained), with a padding row last: the content tower embeds them from their features."""
    idx = np.minimum(catalogue["item_idx"].to_numpy(dtype=np.int64), model.n_items)
    if model.vocabulary is None:
        raise ValueError(
            "this model's item tower reads ids only: it cannot embed movies it was not trained on"
        )
    features = model.vocabulary.encode(catalogue)
    return model.catalogue_table(torch.as_tensor(idx, device=model.device), features)


def serving_histories(view: SplitView, length: int) -> torch.Tensor:
    """Every user's history before ``view``'s split, as the model reads it: [n_users, length]."""
    prepared = view.prepared
    return build_histories(view.history_pairs(), prepared.n_users, prepared.n_items, length)


class Evaluation:
    """A model scored on one held-out split, inputs built once for many calls.

    ``users``: judge only a sample of this many of the split's users, drawn once with ``seed``
    (0 or more than there are: all of them).
    """

    def __init__(self, model: TwoTower, prepared: Prepared, split: str, batch_size: int = 1024,
                 users: int = 0, seed: int = 0) -> None:  # fmt: skip
        self.model, self.batch_size = model, batch_size
        self.view = SplitView(prepared, split)
        self.heldout = self.view.heldout
        if 0 < users < len(self.heldout):
            pick = np.random.default_rng(seed).choice(len(self.heldout), users, replace=False)
            self.heldout = self.heldout.iloc[np.sort(pick)]
        self.open = prepared.n_items != model.n_items
        length = model.cfg.history_length
        self.histories = serving_histories(self.view, length) if model.reads_history else None

    def run(self) -> tuple[dict[str, float], np.ndarray]:
        table = catalogue_table(self.model, self.view.prepared.catalogue) if self.open else None
        scorer = Scorer(self.model, self.histories, table)
        ranks = evaluate_ranks(scorer, self.heldout, self.view.seen, self.batch_size)
        return metrics_from_ranks(ranks), ranks


def evaluate_model(
    model: TwoTower, prepared: Prepared, split: str, batch_size: int = 1024
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics and per-user ranks of ``model`` on 'valid' (seen = train) or 'test' (seen = train+valid)."""
    return Evaluation(model, prepared, split, batch_size).run()
