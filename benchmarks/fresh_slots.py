"""Fresh slots: the last places of each top-K list kept for the movies new since training.

A movie that arrived after the model was trained has no positives, and the default two-tower
rarely ranks one high enough for a list, while a quarter of what people like is such a movie
(README, the time split). ``score.fresh_slots`` keeps the last S of the K places of every list for
the user's best-scoring movies among those new since training (no rating in the training data), when
they are not in the list already. This measures S on the time split (recsys.data.time_split, the
protocol of benchmarks/quality.py): the default model is trained per seed, then each held-out
positive is ranked in the list each S gives (K = 100, a miss beyond it). Reported per S: Recall@10,
Recall@100 and NDCG@10 on validation and test, and on test the positives of new movies and of
known ones apart. S is chosen by the best mean validation Recall@100 over the seeds.

    .venv/bin/python benchmarks/fresh_slots.py --cut 2017-09-25 --valid-days 365 --seeds 0 1 2

Prints a markdown table and writes JSON (default benchmarks/results/fresh-slots-<dataset>.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import quality

from recsys.config import load_settings
from recsys.data.time_split import new_movie_mask
from recsys.data.views import SplitView
from recsys.evaluation.metrics import metrics_from_ranks
from recsys.models.two_tower.evaluation import Scorer, catalogue_table, serving_histories
from recsys.models.two_tower.training import train
from recsys.runtime.fresh import fresh_tail

K = 100
METRICS = ("recall_at_10", "recall_at_100", "ndcg_at_10")


def fresh_lists(scores: np.ndarray, fresh: np.ndarray, slots: int, k: int = K) -> np.ndarray:
    """[U, k] lists as the nightly scoring serves them (recsys.runtime.fresh.fresh_tail): seen
    movies must score -inf; a place without a movie is -1."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(scores, order, axis=1)
    if slots and len(fresh):
        order, top_scores = fresh_tail(order, top_scores, scores[:, fresh], fresh, slots)
    return np.where(np.isfinite(top_scores), order, -1)


def list_ranks(lists: np.ndarray, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Each held-out (user, item)'s place in the user's list, ``n_items`` (a miss) when absent."""
    ranks = np.full(len(users), n_items, dtype=np.int64)
    for row, (user, item) in enumerate(zip(users, items)):
        where = np.flatnonzero(lists[user] == item)
        if len(where) and item >= 0:
            ranks[row] = int(where[0])
    return ranks


def run_seed(data: quality.Data, seed: int, slots: list[int]) -> dict:
    prepared, opened = data.prepared, data.opened
    assert opened is not None
    settings = load_settings(
        ["data.dataset=ml-latest-small", "train.progress_bar=false", "train.threads=1", f"train.seed={seed}"]
    )
    started = time.perf_counter()
    model = train(prepared, settings, validation=opened, tail=data.tail).model
    seconds = time.perf_counter() - started
    model.eval()
    catalogue = opened.catalogue
    outside = np.arange(model.n_items, len(catalogue))
    fresh = outside[~catalogue["movie_id"].iloc[outside].isin(data.tail["movie_id"]).to_numpy()]
    table = catalogue_table(model, catalogue)
    row: dict = {"seed": seed, "train_seconds": seconds, "fresh_movies": len(fresh)}
    for split in ("valid", "test"):
        view = SplitView(opened, split)
        histories = serving_histories(view, model.cfg.history_length) if model.reads_history else None
        scores = Scorer(model, histories, table)(np.arange(opened.n_users))
        for user, items in enumerate(view.seen):
            scores[user, items] = -np.inf
        users, items = view.heldout["user_idx"].to_numpy(), view.heldout["item_idx"].to_numpy()
        new = new_movie_mask(SplitView(prepared, split).heldout)
        for s in slots:
            ranks = list_ranks(fresh_lists(scores, fresh, s), users, items, len(catalogue))
            row.update({f"{split}_{m}@{s}": v for m, v in metrics_from_ranks(ranks, (10, 100)).items()})
            if split == "test":
                for label, mask in (("new", new), ("known", ~new)):
                    found = metrics_from_ranks(ranks[mask], (10, 100))
                    row.update({f"test_{label}_{m}@{s}": found[m] for m in METRICS})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--cut", default="2017-09-25")
    parser.add_argument("--valid-days", type=int, default=365)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--slots", type=int, nargs="+", default=[0, 2, 5, 10, 20])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = args.out or Path(__file__).parent / "results" / f"fresh-slots-{args.dataset}.json"
    protocol = quality.Protocol("time-split", args.cut, args.valid_days)
    data = quality.load_prepared(args.dataset, protocol)
    started = time.perf_counter()
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(data, seed, args.slots))
        print(f"[{time.perf_counter() - started:6.0f} s] seed {seed} done", flush=True)
    mean = {k: float(np.mean([r[k] for r in runs])) for k in runs[0] if "@" in k}
    chosen = max(args.slots, key=lambda s: mean[f"valid_recall_at_100@{s}"])
    print(f"\n## Fresh slots, time split at {args.cut} (mean over seeds {args.seeds}; K = {K})\n")
    print("| slots | valid R@100 | valid NDCG@10 | test R@100 | test NDCG@10 | test new R@100 ", end="")
    print("| test known R@100 |")
    print("|---|---|---|---|---|---|---|")
    for s in args.slots:
        mark = " (chosen)" if s == chosen else ""
        cells = [
            mean[f"{k}@{s}"]
            for k in (
                "valid_recall_at_100",
                "valid_ndcg_at_10",
                "test_recall_at_100",
                "test_ndcg_at_10",
                "test_new_recall_at_100",
                "test_known_recall_at_100",
            )
        ]
        print(f"| {s}{mark} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    out.write_text(
        json.dumps(
            {
                "dataset": args.dataset,
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "command": "benchmarks/fresh_slots.py " + shlex.join(sys.argv[1:]),
                "protocol": {"cut": args.cut, "valid_days": args.valid_days},
                "k": K,
                "seeds": args.seeds,
                "slots": args.slots,
                "chosen": {"slots": chosen, "rule": "best mean validation Recall@100 over the seeds"},
                "mean": mean,
                "runs": runs,
                "wall_seconds": time.perf_counter() - started,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
