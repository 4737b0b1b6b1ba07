"""Quality by the protocol of DESIGN.md: MostPop, EASE and two-tower variants, several seeds.

Models are chosen on validation; test is reported. For each variant: mean over seeds of every
metric, and a 95% bootstrap interval over users (pooled over seeds) for NDCG@10 and Recall@10.

    .venv/bin/python benchmarks/quality.py --seeds 0 1 2 --variant seed="" \
        --variant logq="model.logq_correction=true"
Prints a table and writes JSON to benchmarks/results/quality.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from recsys.config import load_settings
from recsys.data import load_movies, load_ratings, prepare
from recsys.data import seen_lists
from recsys.evaluation import (EASE, bootstrap_interval, evaluate_ranks, metrics_from_ranks, ndcg_at_k,
                               recall_at_k)
from recsys.experiment import mostpop_metrics
from recsys.training import evaluate_model, train

DEFAULT_VARIANTS = {
    "two-tower seed (ID towers, in-batch only)": "model.logq_correction=false model.num_sampled_negatives=0",
    "two-tower + logQ": "model.num_sampled_negatives=0",
    "two-tower + logQ + 256 uniform negs (default)": "",
    "two-tower + logQ + history tower": "model.user_tower=history model.num_sampled_negatives=0",
}


def run_variant(prepared, overrides: list[str], seeds: list[int]) -> dict:
    rows, valid_ranks, test_ranks, seconds = [], [], [], []
    for seed in seeds:
        settings = load_settings(["train.progress_bar=false", f"train.seed={seed}", *overrides])
        start = time.perf_counter()
        result = train(prepared, settings)
        seconds.append(time.perf_counter() - start)
        valid, vr = evaluate_model(result.model, prepared, "valid")
        test, tr = evaluate_model(result.model, prepared, "test")
        valid_ranks.append(vr)
        test_ranks.append(tr)
        rows.append({"seed": seed, "best_epoch": result.best_epoch,
                     **{f"valid_{k}": v for k, v in valid.items()},
                     **{f"test_{k}": v for k, v in test.items()}})
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "seed"}
    pooled = np.concatenate(test_ranks)
    out["test_ndcg_at_10_ci"] = bootstrap_interval(pooled, ndcg_at_k, 10)
    out["test_recall_at_10_ci"] = bootstrap_interval(pooled, recall_at_k, 10)
    out["train_seconds_median"] = float(np.median(seconds))
    out["per_seed"] = rows
    return out


def run_ease(prepared, l2_grid: list[float]) -> dict:
    """EASE with l2 chosen on validation NDCG@10 (deterministic: no seeds)."""
    inter = prepared.interactions
    train, before_test = prepared.split("train"), inter[inter["split"].isin(["train", "valid"])]
    n_users, n_items = prepared.n_users, prepared.n_items
    best: dict = {}
    for l2 in l2_grid:
        ranks = evaluate_ranks(EASE(train, train, n_users, n_items, l2), prepared.split("valid"),
                               seen_lists(train, n_users))
        valid = metrics_from_ranks(ranks)
        if not best or valid["ndcg_at_10"] > best["valid_ndcg_at_10"]:
            best = {"l2": l2, **{f"valid_{k}": v for k, v in valid.items()}}
    model = EASE(train, before_test, n_users, n_items, best["l2"])
    ranks = evaluate_ranks(model, prepared.split("test"), seen_lists(before_test, n_users))
    best.update({f"test_{k}": v for k, v in metrics_from_ranks(ranks).items()})
    best["test_ndcg_at_10_ci"] = bootstrap_interval(ranks, ndcg_at_k, 10)
    best["test_recall_at_10_ci"] = bootstrap_interval(ranks, recall_at_k, 10)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variant", action="append", default=[],
                        help='name="override override ..." (default: the built-in variants)')
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "quality.json")
    args = parser.parse_args()
    variants = dict(v.split("=", 1) for v in args.variant) if args.variant else DEFAULT_VARIANTS
    settings = load_settings()
    folder = settings.paths.datasets / settings.data.dataset
    prepared = prepare(load_ratings(folder / "ratings.csv"), load_movies(folder / "movies.csv"),
                       settings.data)
    results = {"MostPop": mostpop_metrics(prepared)}
    results["MostPop"] = {k.replace("mostpop_", ""): v for k, v in results["MostPop"].items()}
    if prepared.n_items <= 30_000:  # dense item-item inverse: fine for ml-latest-small and ml-20m
        grid = [1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0]
        results["EASE (l2 chosen on validation)"] = run_ease(prepared, grid)
    for name, overrides in variants.items():
        results[name] = run_variant(prepared, overrides.split(), args.seeds)
    cols = ["valid_recall_at_10", "valid_recall_at_50", "valid_recall_at_100", "valid_ndcg_at_10",
            "test_recall_at_10", "test_recall_at_50", "test_recall_at_100", "test_ndcg_at_10"]
    print(f"{'model':44s} " + " ".join(f"{c.replace('_at_', '@'):>14s}" for c in cols))
    for name, row in results.items():
        print(f"{name:44s} " + " ".join(f"{row[c]:14.4f}" for c in cols))
    for name, row in results.items():
        if "test_ndcg_at_10_ci" in row:
            lo, hi = row["test_ndcg_at_10_ci"]
            print(f"{name}: test NDCG@10 95% CI [{lo:.4f}, {hi:.4f}] (seeds {args.seeds})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"dataset": settings.data.dataset, "seeds": args.seeds,
                                    "users": prepared.n_users, "results": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
