"""The promotion gate: champion and challenger evaluated alike, on today's validation split.

Both versions are read through :class:`recsys.runtime.two_tower.ModelBundle` and scored with their own ONNX
graphs exactly as nightly scoring would score them: each validation user's history and seen set
are their train positives from the CURRENT prepared data, mapped into each model's item index.
A held-out item's rank is its position in the model's top-K list (K >= 100 by default, so Recall@K
and NDCG@K for K <= the list length equal the protocol's full-catalogue values); an item outside
the list, or unknown to the model, is a miss. MostPop is evaluated on the same split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.data.prepared import Prepared, seen_lists
from recsys.evaluation.metrics import KS, MostPop, evaluate_ranks, metrics_from_ranks
from recsys.runtime.scoring import score_users, user_inputs
from recsys.runtime.two_tower import ModelBundle

GATE_METRIC = "ndcg_at_10"


def list_ranks(recs: pd.DataFrame, heldout: pd.DataFrame, miss: int) -> np.ndarray:
    """Rank of each held-out (user_id, movie_id) in that user's list; ``miss`` when absent."""
    lists = dict(zip(recs["user_id"].tolist(), recs["item_ids"]))
    ranks = np.full(len(heldout), miss, dtype=np.int64)
    for row, (user, movie) in enumerate(zip(heldout["user_id"], heldout["movie_id"])):
        items = lists.get(int(user))
        if items is not None:
            hit = np.flatnonzero(np.asarray(items) == movie)
            if len(hit):
                ranks[row] = hit[0]
    return ranks


def evaluate_bundle(bundle: ModelBundle, prepared: Prepared, split: str = "valid") -> dict[str, float]:
    """Metrics of a model version on ``prepared``'s split, scored through its graph."""
    before = ("train",) if split == "valid" else ("train", "valid")
    inter = prepared.interactions
    history = inter[inter["split"].isin(before)]
    heldout = prepared.split(split)
    inputs = user_inputs(history, bundle, heldout["user_id"].unique())
    recs = score_users(bundle, inputs, "gate", "gate")
    ks = [k for k in KS if k <= bundle.k]
    return metrics_from_ranks(list_ranks(recs, heldout, miss=max(KS) + bundle.n_items), ks)


def mostpop_metrics(prepared: Prepared) -> dict[str, dict[str, float]]:
    """MostPop (train counts) on "valid" (seen = train) and "test" (seen = train + valid)."""
    baseline = MostPop(prepared.catalogue["train_count"].to_numpy())
    inter = prepared.interactions
    out = {}
    for split, before in (("valid", ("train",)), ("test", ("train", "valid"))):
        seen = seen_lists(inter[inter["split"].isin(before)], prepared.n_users)
        out[split] = metrics_from_ranks(evaluate_ranks(baseline, prepared.split(split), seen))
    return out


@dataclass
class Decision:
    promote: bool
    reason: str


def decide(
    challenger: float,
    champion: float | None,
    mostpop: float,
    force: bool = False,
    champion_version: str | None = None,
) -> Decision:
    """Promote only a challenger that beats MostPop and the champion on the same split."""
    name = GATE_METRIC.replace("_at_", "@")
    if force:
        return Decision(True, "forced")
    if challenger <= mostpop:
        return Decision(False, f"valid {name} {challenger:.4f} <= MostPop's {mostpop:.4f}")
    if champion is None:
        return Decision(True, f"first version; valid {name} {challenger:.4f} > MostPop's {mostpop:.4f}")
    if challenger > champion:
        return Decision(
            True,
            f"valid {name} {challenger:.4f} > champion v{champion_version}'s {champion:.4f} (same split)",
        )
    return Decision(
        False, f"valid {name} {challenger:.4f} <= champion v{champion_version}'s {champion:.4f} (same split)"
    )
