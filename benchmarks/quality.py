"""Quality by the protocol of DESIGN.md: MostPop, EASE, iALS and two-tower variants, several seeds.

Models are chosen on validation; test is reported. For each two-tower variant: the mean over seeds
of every metric, and a 95% bootstrap interval over users (pooled over seeds) for NDCG@10 and
Recall@10 and Recall@50. EASE and iALS choose their hyper-parameters on validation NDCG@10.
Variants train in parallel worker processes, one torch thread each.

    .venv/bin/python benchmarks/quality.py --seeds 0 1 2 --workers 2
    .venv/bin/python benchmarks/quality.py --seeds 0 --variant quick="train.max_epochs=2"

A variant is ``name=overrides``; ``hard_from=<variant name>`` among the overrides trains that
variant first (same seed) and uses its lists below their top as the hard-negative "champion".
Prints a table and writes JSON (default benchmarks/results/quality-<dataset>.json).

``--protocol time-split --cut YYYY-MM-DD`` (or ``--last-days D``) prepares by recsys.data.time_split
instead (train before the cut's ``--valid-days`` window, default as long as the test period; every
known user's positives after the cut held out). Each test metric is also reported on the positives
of new movies (outside the trained catalogue) and of known ones, as ``test_new_*`` and
``test_known_*``; JSON default quality-<dataset>-time-split.json:

    .venv/bin/python benchmarks/quality.py --protocol time-split --last-days 180 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.config import load_settings
from recsys.data.prepared import Prepared, load_movies, load_ratings, load_tags, prepare, with_tags
from recsys.data.stream import day_start
from recsys.data.time_split import cut_of, new_movie_mask, open_catalogue, prepare_time_split, test_days
from recsys.data.views import SplitView
from recsys.errors import ConfigError, DataError
from recsys.evaluation.baselines import EASE
from recsys.evaluation.metrics import (
    bootstrap_interval,
    evaluate_ranks,
    metrics_from_ranks,
    ndcg_at_k,
    recall_at_k,
)
from recsys.tracking.benchmarks import log_benchmark
from recsys.tracking.gate import mostpop_ranks
from recsys.tracking.plots import plot_time_to_quality

SAMPLED = "model.softmax=sampled"
IDS = "model.item_tower=id"  # the item tower of every row measured before issue 21
ID_SEED = f"{IDS} model.user_tower=id train.batch_size=1024 train.learning_rate=0.003 train.patience=4"
# ML-20M size: the default grid (factors up to 512, 18 configurations) would take hours on 2 cores.
# On the generated ML-20M release the strongest regularisation won each grid tried, (64, 128) x
# (30, 100) and then (32, 64, 128) x (30 .. 1000); this one reaches past that corner
# (benchmarks/results/baselines-ml20m-synth.json).
LARGE_IALS_GRID = [
    {"factors": f, "regularization": r, "iterations": 15, "alpha": 10.0}
    for f in (32, 64, 128)
    for r in (300.0, 1000.0, 3000.0, 10000.0)
]
OLD_DEFAULT = "sasrec, full softmax, id item tower (default until issue 21)"
SAMPLED_LOGQ = "sasrec, sampled: in-batch + 256 uniform, logQ"
DEFAULT_VARIANTS = {
    "sasrec, content item tower + 1,024 tail negatives (default)": "",
    "sasrec, content item tower, no tail negatives": "model.tail_negatives=0",
    "sasrec, content item tower, no tail negatives, id dropout 0.5": (
        "model.tail_negatives=0 model.id_dropout=0.5"
    ),
    OLD_DEFAULT: IDS,
    SAMPLED_LOGQ: f"{IDS} {SAMPLED}",
    "sasrec, sampled: in-batch + 256 uniform, no logQ": f"{IDS} {SAMPLED} model.logq_correction=false",
    "sasrec, sampled: in-batch + 256 count^0.75, logQ": (
        f"{IDS} {SAMPLED} model.negative_distribution=popularity"
    ),
    "sasrec, sampled: 25% hard (champion 20..100) + 75% uniform": (
        f"{IDS} {SAMPLED} train.hard_negative_ratio=0.25 hard_from={SAMPLED_LOGQ}"
    ),
    "sasrec, sampled: 50% hard (champion 20..100) + 50% uniform": (
        f"{IDS} {SAMPLED} train.hard_negative_ratio=0.5 hard_from={SAMPLED_LOGQ}"
    ),
    "sasrec, full softmax + EASE distillation (w=0.5, T=0.05)": f"{IDS} train.distill_weight=0.5",
    "sasrec, full softmax + EASE distillation (w=0.5, T=0.02)": (
        f"{IDS} train.distill_weight=0.5 train.distill_temperature=0.02"
    ),
    "mean-pool tower, full softmax": f"{IDS} model.user_tower=mean",
    "mean-pool tower, full softmax, temperature 0.1": f"{IDS} model.user_tower=mean model.temperature=0.1",
    "id tower (seed: in-batch only)": f"{ID_SEED} {SAMPLED} model.logq_correction=false "
    "model.num_sampled_negatives=0",
    "id tower + logQ + 256 uniform (an earlier default)": f"{ID_SEED} {SAMPLED}",
}
COLUMNS = [
    "valid_recall_at_10",
    "valid_recall_at_50",
    "valid_recall_at_100",
    "valid_ndcg_at_10",
    "test_recall_at_10",
    "test_recall_at_50",
    "test_recall_at_100",
    "test_ndcg_at_10",
]
# the time split's columns beside them: the test metrics on new movies' and known movies' positives
SPLIT_COLUMNS = [
    f"test_{group}_{metric}"
    for group in ("known", "new")
    for metric in ("recall_at_10", "recall_at_100", "ndcg_at_10")
]


@dataclass(frozen=True)
class Protocol:
    """How the data set is prepared: ``leave-last-out`` (DESIGN.md) or ``time-split`` at ``cut``."""

    name: str = "leave-last-out"
    cut: str | None = None  # YYYY-MM-DD, time-split only
    valid_days: int = 0

    @property
    def suffix(self) -> str:
        return "" if self.name == "leave-last-out" else f"-{self.name}"


def time_split_protocol(ratings, cut: str | None, last_days: int | None, valid_days: int | None) -> Protocol:  # noqa: ANN001
    """The time-split protocol for ``ratings``: the cut, and validation as long as the test period
    unless ``valid_days`` is given."""
    day = cut_of(ratings, date.fromisoformat(cut) if cut else None, last_days)
    return Protocol("time-split", day.isoformat(), valid_days or test_days(ratings, day))


@dataclass(frozen=True)
class Data:
    """A data set prepared by a protocol, and what the content item tower needs besides."""

    prepared: Prepared
    opened: Prepared | None  # time split: the same rows over the open catalogue of the evaluation
    tail: pd.DataFrame  # movies known at training time outside the trained catalogue


@lru_cache(maxsize=1)
def load_prepared(dataset: str, protocol: Protocol = Protocol()) -> Data:
    """The data set prepared by ``protocol`` (movies with their tags as known at the cut)."""
    settings = load_settings([f"data.dataset={dataset}"])
    folder = settings.paths.datasets / dataset
    ratings, movies = load_ratings(folder / "ratings.csv"), load_movies(folder / "movies.csv")
    tags = load_tags(folder / "tags.csv")
    if protocol.name == "time-split":
        assert protocol.cut is not None
        cut = date.fromisoformat(protocol.cut)
        movies = with_tags(movies, tags, before=day_start(cut))
        prepared = prepare_time_split(ratings, movies, settings.data, cut, protocol.valid_days)
        known = ratings[ratings["timestamp"] < day_start(cut - timedelta(days=protocol.valid_days))]
        opened: Prepared | None = open_catalogue(prepared, movies, ratings)
    else:
        movies = with_tags(movies, tags)
        prepared, known, opened = prepare(ratings, movies, settings.data), ratings, None
    rated = movies["movie_id"].isin(known["movie_id"].unique())
    tail = movies[rated & ~movies["movie_id"].isin(prepared.catalogue["movie_id"])]
    return Data(prepared, opened, tail.reset_index(drop=True))


def breakdown(ranks: np.ndarray, new: np.ndarray) -> dict[str, float]:
    """The test metrics on the positives of new movies and of known ones (``test_new_*``,
    ``test_known_*``), and the share of held-out positives that are for new movies."""
    out = {"test_new_share": float(new.mean()) if len(new) else 0.0}
    for label, mask in (("new", new), ("known", ~new)):
        out.update({f"test_{label}_{k}": v for k, v in metrics_from_ranks(ranks[mask]).items()})
    return out


def _split_overrides(text: str) -> tuple[list[str], str | None]:
    """Settings overrides and the optional ``hard_from=<variant>`` (which may contain spaces)."""
    if "hard_from=" in text:
        head, _, champion = text.partition("hard_from=")
        return head.split(), champion.strip()
    return text.split(), None


def _champion_lists(prepared: Prepared, model, settings) -> np.ndarray:  # noqa: ANN001
    """The champion stand-in's top lists for train users, positions [skip, pool) (pad n_items)."""
    from recsys.models.two_tower.evaluation import Scorer, serving_histories

    view = SplitView(prepared, "valid")  # the train positives: history and seen set
    histories = serving_histories(view, model.cfg.history_length) if model.reads_history else None
    scores = Scorer(model, histories)(np.arange(prepared.n_users))
    for user, items in enumerate(view.seen):
        scores[user, items] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, : settings.train.hard_negative_pool]
    return top[:, settings.train.hard_negative_skip :]


def train_one(
    dataset: str,
    name: str,
    variants: dict[str, str],
    seed: int,
    protocol: Protocol = Protocol(),
    budget: float = 0.0,
) -> dict:
    """Train variant ``name`` with ``seed`` (its champion first, if it has one) for at most
    ``budget`` minutes (0: until early stopping); evaluate it."""
    from recsys.models.two_tower.evaluation import evaluate_model
    from recsys.models.two_tower.training import train

    logging.basicConfig(level=logging.WARNING)
    data = load_prepared(dataset, protocol)
    prepared, opened = data.prepared, data.opened
    overrides, champion = _split_overrides(variants[name])
    base = [f"data.dataset={dataset}", "train.progress_bar=false", "train.threads=1", f"train.seed={seed}",
            *([f"train.max_minutes={budget}"] if budget else [])]  # fmt: skip
    settings = load_settings([*base, *overrides])
    hard = None
    if champion:
        champion_settings = load_settings([*base, *_split_overrides(variants[champion])[0]])
        hard = _champion_lists(prepared, train(prepared, champion_settings).model, settings)
    # a content tower ranks the open catalogue (new movies included); an id tower cannot
    judged = opened if opened is not None and settings.model.item_tower == "content" else prepared
    start = time.perf_counter()
    result = train(prepared, settings, hard_lists=hard, validation=judged, tail=data.tail)
    seconds = time.perf_counter() - start
    valid, valid_ranks = evaluate_model(result.model, judged, "valid")
    spent, curve = 0.0, []  # validation NDCG@10 after each epoch, against minutes spent
    for row in result.epochs:
        spent += row["train_seconds"] + row["valid_seconds"]
        curve.append([spent / 60, row["valid_ndcg_at_10"]])
    test, test_ranks = evaluate_model(result.model, judged, "test")
    return {
        "name": name,
        "seed": seed,
        "best_epoch": result.best_epoch,
        "epochs": len(result.epochs),
        "train_seconds": seconds,
        "curve": curve,
        **{f"valid_{k}": v for k, v in valid.items()},
        **{f"test_{k}": v for k, v in test.items()},
        "test_ranks": test_ranks.tolist(),
    }


def summarise(runs: list[dict], new: np.ndarray | None = None) -> dict:
    """Mean over seeds, pooled bootstrap intervals, per-seed rows; with ``new`` (the time split's
    new-movie mask over the test rows) each run's :func:`breakdown` too."""
    if new is not None:
        runs = [{**r, **breakdown(np.asarray(r["test_ranks"]), new)} for r in runs]
    keys = [k for k in runs[0] if k.startswith(("valid_", "test_")) and k != "test_ranks"]
    keys = [k for k in keys if not isinstance(runs[0][k], list)]
    out = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    pooled = np.concatenate([np.asarray(r["test_ranks"]) for r in runs])
    out["test_ndcg_at_10_ci"] = bootstrap_interval(pooled, ndcg_at_k, 10)
    out["test_recall_at_10_ci"] = bootstrap_interval(pooled, recall_at_k, 10)
    out["test_recall_at_50_ci"] = bootstrap_interval(pooled, recall_at_k, 50)
    out["train_seconds_median"] = float(np.median([r["train_seconds"] for r in runs]))
    out["per_seed"] = [
        {k: v for k, v in r.items() if k not in ("test_ranks", "name")}
        for r in sorted(runs, key=lambda r: r["seed"])
    ]
    return out


def run_ease(prepared: Prepared, l2_grid: list[float]) -> dict:
    """EASE with l2 chosen on validation NDCG@10 (deterministic: no seeds)."""
    valid_view, test_view = SplitView(prepared, "valid"), SplitView(prepared, "test")
    train, before_test = valid_view.before, test_view.before
    n_users, n_items = prepared.n_users, prepared.n_items
    best: dict = {}
    for l2 in l2_grid:
        ranks = evaluate_ranks(EASE(train, train, n_users, n_items, l2), valid_view.heldout, valid_view.seen)
        valid = metrics_from_ranks(ranks)
        if not best or valid["ndcg_at_10"] > best["valid_ndcg_at_10"]:
            best = {"l2": l2, **{f"valid_{k}": v for k, v in valid.items()}}
    model = EASE(train, before_test, n_users, n_items, best["l2"])
    ranks = evaluate_ranks(model, test_view.heldout, test_view.seen)
    best.update({f"test_{k}": v for k, v in metrics_from_ranks(ranks).items()})
    best["test_ndcg_at_10_ci"] = bootstrap_interval(ranks, ndcg_at_k, 10)
    best["test_recall_at_10_ci"] = bootstrap_interval(ranks, recall_at_k, 10)
    best["test_recall_at_50_ci"] = bootstrap_interval(ranks, recall_at_k, 50)
    best["test_ranks"] = ranks.tolist()
    return best


def baselines(prepared: Prepared, new: np.ndarray | None = None) -> dict[str, dict]:
    """MostPop, EASE and iALS rows (EASE up to 10,000 items, while the dense inverse is cheap; iALS
    on a smaller grid above that); with
    ``new`` (the time split's new-movie mask over the test rows) each with its :func:`breakdown`.
    None of them can score a movie outside the trained catalogue: such a positive is a miss."""
    from recsys.evaluation.ials import tune_ials

    ranks = mostpop_ranks(prepared)  # the promotion gate's floor
    rows = {
        "MostPop": {
            **{f"{s}_{k}": v for s, r in ranks.items() for k, v in metrics_from_ranks(r).items()},
            "test_ranks": ranks["test"],
        }
    }
    if prepared.n_items <= 10_000:  # above, the dense inverse costs minutes per l2 value
        rows["EASE (l2 chosen on validation)"] = run_ease(
            prepared, [1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0]
        )
    started = time.perf_counter()
    ials = tune_ials(prepared, None if prepared.n_items <= 10_000 else LARGE_IALS_GRID)
    ials["grid"] = ials.get("grid", [])
    ials["tune_seconds"] = time.perf_counter() - started
    rows["iALS (implicit; chosen on validation)"] = ials
    for row in rows.values():
        ranks = np.asarray(row.pop("test_ranks"))
        if new is not None:
            row.update(breakdown(ranks, new))
    return rows


def print_table(results: dict[str, dict], seeds: list[int]) -> None:
    first = next(iter(results.values()))
    columns = COLUMNS + [c for c in SPLIT_COLUMNS if c in first]
    print(f"{'model':62s} " + " ".join(f"{c.replace('_at_', '@'):>14s}" for c in columns))
    for name, row in results.items():
        print(f"{name:62s} " + " ".join(f"{row[c]:14.4f}" for c in columns))
    for name, row in results.items():
        intervals = [
            f"{label} [{row[key][0]:.4f}, {row[key][1]:.4f}]"
            for label, key in (("NDCG@10", "test_ndcg_at_10_ci"), ("Recall@50", "test_recall_at_50_ci"))
            if key in row
        ]
        if intervals:
            print(f"{name}: test 95% CI " + ", ".join(intervals))
    print(f"(two-tower rows: mean over seeds {seeds}; intervals pooled over seeds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2, help="parallel training processes")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help='name="override override ..." (default: the built-in variants)',
    )
    parser.add_argument(
        "--drop", action="append", default=[], help="leave out this built-in variant (repeatable)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the finished runs of an interrupted run (<out>.runs.jsonl)",
    )
    parser.add_argument("--no-baselines", action="store_true", help="skip MostPop/EASE/iALS")
    parser.add_argument(
        "--only-baselines", action="store_true", help="MostPop/EASE/iALS alone, no two-tower run"
    )
    parser.add_argument("--protocol", choices=("leave-last-out", "time-split"), default="leave-last-out")
    parser.add_argument("--cut", help="time-split: the first day of the test period, YYYY-MM-DD")
    parser.add_argument("--last-days", type=int, help="time-split: the test period is the last D days")
    parser.add_argument("--valid-days", type=int, help="time-split: validation days before the cut")
    parser.add_argument(
        "--budget-minutes", type=float, default=0.0, help="train.max_minutes of every run (0: none)"
    )
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the JSON and plot to MLflow")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    protocol = Protocol()
    if args.protocol == "time-split":
        if (args.cut is None) == (args.last_days is None):
            parser.error("--protocol time-split needs exactly one of --cut and --last-days")
        folder = load_settings([f"data.dataset={args.dataset}"]).paths.datasets / args.dataset
        try:
            protocol = time_split_protocol(
                load_ratings(folder / "ratings.csv"), args.cut, args.last_days, args.valid_days
            )
        except ValueError as exc:  # a malformed day, a cut after the data
            parser.error(f"time split: {exc}")
    elif args.cut or args.last_days or args.valid_days:
        parser.error("--cut, --last-days and --valid-days need --protocol time-split")
    if args.only_baselines and (args.no_baselines or args.variant):
        parser.error("--only-baselines takes neither --no-baselines nor --variant")
    variants = dict(v.split("=", 1) for v in args.variant) if args.variant else dict(DEFAULT_VARIANTS)
    if args.only_baselines:
        variants = {}
    for name in args.drop:
        if variants.pop(name, None) is None:
            parser.error(f"--drop {name!r}: not a variant")
    for name, text in variants.items():
        champion = _split_overrides(text)[1]
        if champion and champion not in variants:
            parser.error(f"variant {name!r}: hard_from={champion!r} is not a variant")
        budget = [f"train.max_minutes={args.budget_minutes}"]
        try:  # fail now on a bad key or value, not after an hour
            load_settings([*_split_overrides(text)[0], *budget])
        except ConfigError as exc:
            parser.error(f"variant {name!r}: {exc}")
    out = args.out or Path(__file__).parent / "results" / f"quality-{args.dataset}{protocol.suffix}.json"
    try:
        prepared = load_prepared(args.dataset, protocol).prepared
    except DataError as exc:  # a cut that leaves a period empty, an unreadable release
        parser.error(str(exc))
    new = new_movie_mask(SplitView(prepared, "test").heldout) if protocol.name == "time-split" else None
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    out.parent.mkdir(parents=True, exist_ok=True)
    runs_log = out.with_suffix(".runs.jsonl")  # every finished run, as it lands (a crash loses none)
    runs = []
    if args.resume and runs_log.exists():
        runs = [
            r
            for r in map(json.loads, runs_log.read_text().splitlines())
            if r["name"] in variants and r["seed"] in args.seeds
        ]
        print(f"resuming: {len(runs)} finished runs from {runs_log}", flush=True)
    else:
        runs_log.unlink(missing_ok=True)
    done = {(r["name"], r["seed"]) for r in runs}
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        futures = [
            pool.submit(train_one, args.dataset, name, variants, seed, protocol, args.budget_minutes)
            for name in variants
            for seed in args.seeds
            if (name, seed) not in done
        ]
        results = {} if args.no_baselines else baselines(prepared, new)
        for future in as_completed(futures):
            run = future.result()
            runs.append(run)
            with runs_log.open("a") as fh:
                fh.write(json.dumps(run) + "\n")
            print(
                f"[{len(runs)}/{len(futures) + len(done)}] {run['name']} seed {run['seed']}: "
                f"valid NDCG@10 {run['valid_ndcg_at_10']:.4f}, {run['train_seconds']:.0f} s",
                flush=True,
            )
    for name in variants:
        results[name] = {
            "overrides": variants[name],
            **summarise([r for r in runs if r["name"] == name], new),
        }
    out.write_text(
        json.dumps(
            {
                "dataset": args.dataset,
                "protocol": {"name": protocol.name, "cut": protocol.cut, "valid_days": protocol.valid_days},
                "seeds": args.seeds,
                "users": prepared.n_users,
                "items": prepared.n_items,
                "n_valid": int(prepared.meta["n_valid"]),
                "n_test": int(prepared.meta["n_test"]),
                "unknown_items": {s: prepared.meta[f"n_{s}_unknown_items"] for s in ("valid", "test")},
                "command": "benchmarks/quality.py"
                + (f" --dataset {args.dataset}" if args.dataset != "ml-latest-small" else "")
                + " --seeds "
                + " ".join(map(str, args.seeds))
                + "".join(f" --drop {name!r}" for name in args.drop)
                + (f" --budget-minutes {args.budget_minutes:g}" if args.budget_minutes else "")
                + (" --only-baselines" if args.only_baselines else "")
                + (
                    f" --protocol time-split --cut {protocol.cut} --valid-days {protocol.valid_days}"
                    if new is not None
                    else ""
                ),
                "wall_seconds": time.perf_counter() - started,
                "resumed_runs": len(done),
                "results": results,
            },
            indent=2,
        )
    )
    runs_log.unlink(missing_ok=True)  # none with --only-baselines
    curves = {name: [r["curve"] for r in row["per_seed"] if r.get("curve")] for name, row in results.items()
              if "per_seed" in row}  # fmt: skip
    written = [out]
    if any(curves.values()):
        written.append(plot_time_to_quality(curves, out.with_suffix(".png"), args.dataset))
    print_table(results, args.seeds)
    print(f"wrote {' and '.join(map(str, written))}")
    if not args.no_mlflow:
        print(f"logged to MLflow: {log_benchmark(load_settings(), written, out.stem)}")


if __name__ == "__main__":
    main()
