"""The promotion gates of both registered models, in one shape: evaluate the candidate, the champion
and the floors alike on today's validation split; :func:`decide`; :func:`record` the decision (alias,
run tags and metrics, version tags).

Two-tower: the floor is MostPop and the metric NDCG@10.

Both versions are read through :class:`recsys.runtime.two_tower.ModelBundle` and scored with their own ONNX
graphs exactly as nightly scoring would score them: each validation user's history and seen set
are their train positives from the CURRENT prepared data, mapped into each model's item index.
A held-out item's rank is its position in the model's top-K list (K >= 100 by default, so Recall@K
and NDCG@K for K <= the list length equal the protocol's full-catalogue values); an item outside
the list, or unknown to the model, is a miss. MostPop is evaluated on the same split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.data.prepared import Prepared, PreparedRef
from recsys.data.views import SplitView
from recsys.errors import DataError, ModelNotFoundError
from recsys.evaluation.baselines import MostPop
from recsys.evaluation.metrics import KS, evaluate_ranks, metrics_from_ranks
from recsys.ops.registry import Registry
from recsys.runtime.scoring import score_users, user_inputs
from recsys.runtime.two_tower import ModelBundle

log = logging.getLogger(__name__)
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
    view = SplitView(prepared, split)
    heldout = view.heldout
    inputs = user_inputs(view.before, bundle, heldout["user_id"].unique())
    recs = score_users(bundle, inputs, "gate", "gate")
    ks = [k for k in KS if k <= bundle.k]
    return metrics_from_ranks(list_ranks(recs, heldout, miss=max(KS) + bundle.n_items), ks)


def mostpop_ranks(prepared: Prepared) -> dict[str, np.ndarray]:
    """MostPop (train counts) ranks of every held-out row of "valid" (seen = train) and "test"
    (seen = train + valid)."""
    baseline = MostPop(prepared.catalogue["train_count"].to_numpy())
    views = [SplitView(prepared, split) for split in ("valid", "test")]
    return {v.split: evaluate_ranks(baseline, v.heldout, v.seen) for v in views}


def mostpop_metrics(prepared: Prepared) -> dict[str, dict[str, float]]:
    """MostPop's metrics on "valid" and "test" (:func:`mostpop_ranks`)."""
    return {split: metrics_from_ranks(ranks) for split, ranks in mostpop_ranks(prepared).items()}


@dataclass
class Decision:
    promote: bool
    reason: str


def decide(
    ours: float,
    floors: dict[str, float],
    champion: float | None,
    champion_version: str | None = None,
    force: bool = False,
    metric: str = "valid NDCG@10",
) -> Decision:
    """Promote only a candidate that beats every floor (``{name: value}``) and the champion (None:
    there is none, or it cannot be read) on the same split; ``force`` always promotes."""
    if force:
        return Decision(True, "forced")
    for name, floor in floors.items():
        if ours <= floor:
            return Decision(False, f"{metric} {ours:.4f} does not beat {name} ({floor:.4f})")
    beaten = ", ".join(f"{name} ({floor:.4f})" for name, floor in floors.items())
    if champion is None:
        return Decision(True, f"first version; {metric} {ours:.4f} beats {beaten}")
    if ours > champion:
        return Decision(
            True, f"{metric} {ours:.4f} beats champion v{champion_version} ({champion:.4f}) and {beaten}"
        )
    return Decision(False, f"{metric} {ours:.4f} does not beat champion v{champion_version} ({champion:.4f})")


def record(
    models: Registry, version: str, decision: Decision, metrics: dict[str, float], as_canary: bool = False
) -> dict:
    """Act on a decision: move ``champion`` when it says so (``as_canary``: leave that to the
    online evidence; the caller starts the canary), then tag the version and its run with the
    decision and log ``metrics`` (the evidence) on the run. Returns the gate's result."""
    previous = models.champion_version()
    promoted = decision.promote and not as_canary
    if promoted and previous != version:
        models.promote(version, reason=decision.reason)
    outcome = "promoted" if promoted else ("canary" if decision.promote else "kept_champion")
    reason = decision.reason + ("; it serves a canary slice first" if outcome == "canary" else "")
    models.record_decision(version, {"gate_decision": outcome, "gate_reason": reason}, metrics)
    log.info("%s gate for version %s: %s", models.model_name, version, reason)
    return {
        "version": version,
        "promoted": promoted,
        "canary": outcome == "canary",
        "champion": version if promoted else previous,
        "previous": previous,
        "reason": reason,
    }


def compare_two_tower(models: Registry, version: str, ref: PreparedRef) -> dict:
    """``version``, the champion and MostPop evaluated alike on ``ref``'s validation split, each
    version scored by its own graph; logged to the candidate's run. ``champion`` is None when no
    version holds the alias; an unreadable champion (an older recsys) is gated on MostPop only."""
    prepared = ref.load()
    out: dict = {"version": version, "data_version": ref.data_version, "prepared_dir": str(ref.folder)}
    out["metrics"] = evaluate_bundle(ModelBundle.load(models.download_bundle(version)[1]), prepared)
    out["mostpop_metrics"] = mostpop_metrics(prepared)["valid"]
    out["champion"], out["champion_metrics"] = None, None
    current = models.champion_version()
    if current is not None and current != version:
        out["champion"] = current
        try:
            out["champion_metrics"] = evaluate_bundle(
                ModelBundle.load(models.download_bundle(current)[1]), prepared
            )
        except (ModelNotFoundError, DataError) as exc:
            log.warning("champion v%s cannot be evaluated (%s); gating on MostPop only", current, exc)
            out["champion_unreadable"] = str(exc)
    logged = {f"gate_challenger_valid_{k}": v for k, v in out["metrics"].items()}
    logged.update({f"gate_mostpop_valid_{k}": v for k, v in out["mostpop_metrics"].items()})
    logged.update({f"gate_champion_valid_{k}": v for k, v in (out["champion_metrics"] or {}).items()})
    models.record_decision(
        version, {"gate_data_version": ref.data_version, "gate_champion": str(out["champion"])}, logged
    )
    return out


def promote_two_tower(
    models: Registry, comparison: dict, force: bool = False, as_canary: bool = False
) -> dict:
    """The two-tower gate on a :func:`compare_two_tower` result; ModelNotFoundError when the
    champion moved since the comparison (someone promoted by hand in between)."""
    version, evaluated = str(comparison["version"]), comparison.get("champion_metrics")
    previous = models.champion_version()
    if previous not in (comparison["champion"], version):
        raise ModelNotFoundError(
            f"the champion moved to v{previous} after version {version} was compared with "
            f"v{comparison['champion']}; run the comparison again"
        )
    decision = decide(
        comparison["metrics"][GATE_METRIC],
        {"MostPop": comparison["mostpop_metrics"][GATE_METRIC]},
        evaluated[GATE_METRIC] if evaluated else None,
        comparison["champion"],
        force,
    )
    return record(models, version, decision, {}, as_canary)
