"""Similar movies: the triplet item tower against two-tower item vectors and genres, several seeds.

Protocol: the pairwise table (recsys.data.pairs, default settings) is split by query movie. The default
two-tower recommender is trained once per seed; its item vectors are a baseline as they are (no
extra training, scored by cosine and by dot product) and they start the item tower of every config
with ``similar.init=two_tower`` trained with the same seed. Every grid config is trained with every
seed, and the config chosen on validation (below) has its test figures reported beside the
defaults of SimilarConfig (when they differ), any ``--compare`` config and the baselines.

Every triplet run is scored along both paths a list is served by (recsys.runtime.similar): a
query's trained vector (a movie with enough positives), and the query embedded from its features
alone (``cold_*``: a movie with no or too few ratings), both against the trained catalogue. The
config with the best mean of the two paths' validation Recall@10 is chosen. A diagnostic,
``open_*``: the trained vectors against every movie of ``movies.csv`` as a candidate (the others
embedded from their features), which is why the rare movies are no candidates when served.

The genre multi-hot (cosine and Jaccard, no training; ties among equal genre sets broken at random
per seed, and once left to the metric, which counts a tie as half a movie ranked higher) is the
floor. The table is mined once and handed to parallel worker processes, one torch thread each, a
fresh process per run. The triplet rows are also scored in float64 (a diagnostic of the float32
scoring's precision when the vectors collapse into a small ball).

    .venv/bin/python benchmarks/similar.py --seeds 0 1 2 --workers 2
    .venv/bin/python benchmarks/similar.py --quick --out /tmp/similar-quick.json

``--grid "similar.distance=l2 similar.margin=0.5"`` (repeatable) replaces the built-in grid;
``--set similar.max_epochs=20`` (repeatable) applies to every triplet run, defaults included.
Prints markdown tables and writes JSON (default benchmarks/results/similar-<dataset>.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.config import load_settings
from recsys.data import pairs
from recsys.data.features import item_features
from recsys.data.prepared import Prepared, load_movies, load_ratings, load_tags, prepare, with_tags
from recsys.evaluation.similarity import similarity_metrics, vector_scores

ScoresOf = Callable[[np.ndarray], np.ndarray]

FINE_TUNE = "similar.init=two_tower similar.distance=cosine similar.mining=semi_hard"
L2 = (
    "similar.init=two_tower similar.distance=l2 similar.mining=semi_hard similar.learning_rate=1e-4 "
    "similar.margin=0.5"
)
DEFAULT_GRID = [
    f"{L2} similar.id_dropout=0 similar.content_weight=0",
    f"{L2} similar.id_dropout=0 similar.content_weight=0.1",
    f"{L2} similar.id_dropout=0 similar.content_weight=0.3",
    f"{L2} similar.id_dropout=0 similar.content_weight=1",
    f"{L2} similar.id_dropout=0.25 similar.content_weight=0",
    f"{L2} similar.id_dropout=0.5 similar.content_weight=0",
    # from scratch
    "similar.init=random similar.distance=cosine similar.mining=semi_hard similar.learning_rate=3e-3 "
    "similar.margin=0.4 similar.id_dropout=0.25 similar.content_weight=0",
]
QUICK_GRID = [DEFAULT_GRID[0], DEFAULT_GRID[-1]]
QUICK_SET = ["similar.max_epochs=2"]
QUICK_TWO_TOWER = ["train.max_epochs=2"]
METRICS = ("recall_at_10", "recall_at_50", "auc_hard", "auc_soft")
# The choice: a list is served for a movie either from its trained vector (among the trained movies
# and the few new since training) or, without enough positives, from its features alone; both
# paths count alike.
CHOICE = ("valid_recall_at_10", "cold_valid_recall_at_10")
PATHS = [
    ("test_recall_at_10", "trained catalogue only"),
    ("open_test_recall_at_10", "every movies.csv movie a candidate"),
    ("cold_test_recall_at_10", "without enough positives (features alone)"),
    ("cold_test_recall_at_50", "the same, Recall@50"),
]
COLUMNS = [f"test_{m}" for m in METRICS] + ["valid_recall_at_10"]
HEADERS = ["test Recall@10", "test Recall@50", "test AUC vs hard", "test AUC vs soft", "valid Recall@10"]


@lru_cache(maxsize=1)
def load_prepared(dataset: str) -> Prepared:
    settings = load_settings([f"data.dataset={dataset}"])
    folder = settings.paths.datasets / dataset
    ratings, movies = load_ratings(folder / "ratings.csv"), load_movies_with_tags(dataset)
    prepared = prepare(ratings, movies, settings.data)
    if not (prepared.catalogue["item_idx"].to_numpy() == np.arange(prepared.n_items)).all():
        raise RuntimeError("the catalogue is not in item_idx order")
    return prepared


@lru_cache(maxsize=1)
def load_movies_with_tags(dataset: str) -> pd.DataFrame:
    """Every movie of the release with its tags, as the nightly catalogue holds them."""
    folder = load_settings([f"data.dataset={dataset}"]).paths.datasets / dataset
    return with_tags(load_movies(folder / "movies.csv"), load_tags(folder / "tags.csv"))


_TABLES: dict[str, pd.DataFrame] = {}  # the main process's table, handed to every worker


def load_table(dataset: str) -> pd.DataFrame:
    """The pairwise table with the default pairs settings, mined once (by the main process)."""
    if dataset not in _TABLES:
        prepared = load_prepared(dataset)
        _TABLES[dataset] = pairs.mine(prepared.split("train"), prepared.catalogue, load_settings().pairs)
    return _TABLES[dataset]


def _worker_init(dataset: str, table: pd.DataFrame) -> None:
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    _TABLES[dataset] = table


def git_state() -> dict[str, Any]:
    """The commit measured, and the files under recsys/ or benchmarks/ that differ from it."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout

    try:
        changed = git("status", "--porcelain", "--", "recsys", "benchmarks/similar.py").splitlines()
        return {"commit": git("rev-parse", "HEAD").strip(), "changed": [line[3:] for line in changed]}
    except (OSError, subprocess.CalledProcessError):
        return {}


def _evaluate(
    scores_of: ScoresOf, table: pd.DataFrame, movie_ids: np.ndarray, prefix: str = ""
) -> dict[str, float]:
    """valid_* and test_* metrics of one similarity (each key after ``prefix``)."""
    out: dict[str, float] = {}
    for split in ("valid", "test"):
        metrics = similarity_metrics(scores_of, table[table["split"] == split], movie_ids)
        out.update({f"{prefix}{split}_{k}": v for k, v in metrics.items()})
    return out


def served_paths(model: Any, dataset: str, table: pd.DataFrame, movie_ids: np.ndarray) -> dict[str, float]:
    """The two serving paths (module docstring): ``open_*`` (trained vectors, whole catalogue) and
    ``cold_*`` (queries from their features alone), on valid and test."""
    import torch

    from recsys.models.two_tower.content import content_tensors

    distance = model.cfg.distance
    movies = load_movies_with_tags(dataset)
    others = movies[~movies["movie_id"].isin(movie_ids)].reset_index(drop=True)
    with torch.no_grad():
        vectors = model.all_vectors().numpy()
        content = model.content_vectors().numpy()
        features = content_tensors(model.vocabulary.encode(others))
        extra = model.embed(torch.full((len(others),), model.unknown), *features).numpy()
    whole = np.vstack([vectors, extra])
    whole_ids = np.concatenate([movie_ids, others["movie_id"].to_numpy()])
    return {
        **_evaluate(vector_scores(whole, distance), table, whole_ids, "open_"),
        **_evaluate(vector_scores(vectors, distance, content), table, movie_ids, "cold_"),
        "open_catalogue": float(len(whole_ids)),
    }


def exact_scores(vectors: np.ndarray, distance: str) -> ScoresOf:
    """``scores_of`` in float64 without the norm expansion: cos on unit vectors, or -||a - b|| on
    vectors centred first (L2 is translation-invariant). A diagnostic: :func:`vector_scores` (float32,
    ||a||^2 + ||b||^2 - 2 a.b, as served) loses the ranking when the vectors sit in a tiny ball far
    from the origin."""
    v = np.asarray(vectors, dtype=np.float64)
    if distance == "cosine":
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return lambda rows: v[rows] @ v.T
    v = v - v.mean(0)
    return lambda rows: -np.sqrt(((v[rows][:, None, :] - v[None, :, :]) ** 2).sum(-1))


def run_triplet(
    dataset: str, overrides: list[str], seed: int, init_vectors: np.ndarray | None = None
) -> dict[str, Any]:
    """Train the item tower with ``overrides`` and ``seed`` (``init_vectors``: the same seed's
    two-tower item vectors, used when the config's ``similar.init`` is two_tower); metrics on
    valid and test."""
    import torch

    from recsys.models.item_tower.training import train_tower

    prepared, table = load_prepared(dataset), load_table(dataset)
    cfg = load_settings([*overrides, f"similar.seed={seed}"]).similar
    if cfg.init == "two_tower" and init_vectors is None:
        raise RuntimeError("similar.init=two_tower needs the two-tower vectors of the same seed")
    start = time.perf_counter()
    result = train_tower(
        table, prepared.catalogue, cfg, init_vectors=init_vectors if cfg.init == "two_tower" else None
    )
    seconds = time.perf_counter() - start
    with torch.no_grad():
        vectors = result.model.all_vectors().numpy()
    movie_ids = prepared.catalogue["movie_id"].to_numpy()
    return {
        "kind": "triplet",
        "overrides": overrides,
        "seed": seed,
        "best_epoch": result.best_epoch,
        "epochs": len(result.epochs),
        "train_seconds": seconds,
        "start_valid_recall_at_10": result.start_valid["recall_at_10"],
        **_evaluate(vector_scores(vectors, cfg.distance), table, movie_ids),
        **served_paths(result.model, dataset, table, movie_ids),
        **{
            f"exact_{k}": v
            for k, v in _evaluate(exact_scores(vectors, cfg.distance), table, movie_ids).items()
        },
        "spread": vector_spread(vectors),
        "history": result.epochs,
    }


def run_two_tower(dataset: str, overrides: list[str], seed: int) -> dict[str, Any]:
    """Train the default two-tower recommender; its item vectors scored by cosine and by dot."""
    from recsys.models.two_tower.training import train

    prepared, table = load_prepared(dataset), load_table(dataset)
    base = [f"data.dataset={dataset}", "train.progress_bar=false", "train.threads=1", f"train.seed={seed}"]
    start = time.perf_counter()
    result = train(prepared, load_settings([*base, *overrides]))
    seconds = time.perf_counter() - start
    vectors = result.model.item_vectors().detach().numpy()
    if len(vectors) != prepared.n_items:
        raise RuntimeError(f"two-tower item vectors {vectors.shape} for {prepared.n_items} items")
    movie_ids = prepared.catalogue["movie_id"].to_numpy()
    return {
        "kind": "two_tower",
        "overrides": overrides,
        "seed": seed,
        "best_epoch": result.best_epoch,
        "epochs": len(result.epochs),
        "train_seconds": seconds,
        "by_distance": {d: _evaluate(vector_scores(vectors, d), table, movie_ids) for d in ("cosine", "dot")},
        "vectors": vectors,  # start the item towers of this seed (not written to the JSON)
    }


def vector_spread(vectors: np.ndarray) -> dict[str, float]:
    """How far apart the vectors are: median norm and median distance to their mean (a collapse
    shows as a distance to the mean far below the norm)."""
    v = np.asarray(vectors, dtype=np.float64)
    return {
        "median_norm": float(np.median(np.linalg.norm(v, axis=1))),
        "median_distance_to_mean": float(np.median(np.linalg.norm(v - v.mean(0), axis=1))),
    }


def genre_scores(genres: np.ndarray, measure: str, seed: int | None) -> ScoresOf:
    """Genre multi-hot similarity: cosine or Jaccard; with ``seed``, ties broken by a jitter far
    below the gap between two distinct values."""
    g = np.asarray(genres, dtype=np.float64)
    sizes = g.sum(1)
    jitter = None if seed is None else np.random.default_rng(seed).random(len(g)) * 1e-6

    def scores_of(rows: np.ndarray) -> np.ndarray:
        inter = g[rows] @ g.T
        if measure == "cosine":
            denominator = np.sqrt(np.outer(sizes[rows], sizes))
        else:
            denominator = sizes[rows][:, None] + sizes[None, :] - inter
        scores = np.divide(inter, denominator, out=np.zeros_like(inter), where=denominator > 0)
        return scores if jitter is None else scores + jitter[None, :]

    return scores_of


def genre_rows(prepared: Prepared, table: pd.DataFrame, seeds: list[int]) -> dict[str, dict]:
    """No-training baselines: genre cosine and Jaccard, random tie-break per seed, and the cosine
    with ties left to the metric."""
    genres = item_features(prepared.catalogue).genres
    movie_ids = prepared.catalogue["movie_id"].to_numpy()
    rows = {}
    for measure in ("cosine", "jaccard"):
        runs = [{"seed": s, **_evaluate(genre_scores(genres, measure, s), table, movie_ids)} for s in seeds]
        rows[f"genre {measure} (no training)"] = summarise(runs, {"measure": measure})
    rows["genre cosine, ties left to the metric"] = summarise(
        [{"seed": None, **_evaluate(genre_scores(genres, "cosine", None), table, movie_ids)}],
        {"measure": "cosine", "tie_break": False},
    )
    return rows


def summarise(runs: list[dict], extra: dict | None = None) -> dict[str, Any]:
    """Mean and std (ddof=1; 0 for one run) over seeds of every valid_/test_ metric, per-seed rows."""
    prefixes = ("valid_", "test_", "exact_valid_", "exact_test_", "open_valid_", "open_test_", "cold_")
    keys = [k for k in runs[0] if k.startswith(prefixes)]
    out: dict[str, Any] = dict(extra or {})
    for k in keys:
        values = np.asarray([r[k] for r in runs], dtype=np.float64)
        out[k] = float(values.mean())
        out[f"{k}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    timed = [r["train_seconds"] for r in runs if "train_seconds" in r]
    if timed:
        out["train_seconds_median"] = float(np.median(timed))
    out["per_seed"] = [
        {k: v for k, v in r.items() if k not in ("history", "overrides", "kind")}
        for r in sorted(runs, key=lambda r: -1 if r["seed"] is None else r["seed"])
    ]
    return out


def table_counts(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    counts = table.groupby(["kind", "split"]).size().unstack(fill_value=0)
    return {kind: {s: int(n) for s, n in row.items()} for kind, row in counts.iterrows()}


def pair_leakage(table: pd.DataFrame) -> dict[str, float | int]:
    """Valid/test positive pairs whose two movies also form a train positive pair, either way
    round (the item tower trains on the train pairs both ways: those are seen in training)."""
    positive = table[table["kind"] == "positive"]
    train = positive[positive["split"] == "train"]
    seen = {frozenset(p) for p in zip(train["movie_id_first"], train["movie_id_second"])}
    out: dict[str, float | int] = {}
    for split in ("valid", "test"):
        rows = positive[positive["split"] == split]
        hits = sum(frozenset(p) in seen for p in zip(rows["movie_id_first"], rows["movie_id_second"]))
        out[f"{split}_positive_pairs"] = len(rows)
        out[f"{split}_positive_pairs_in_train"] = int(hits)
        out[f"{split}_positive_pairs_in_train_share"] = round(hits / max(len(rows), 1), 4)
    return out


def _config_key(overrides: list[str]) -> str:
    """The resolved SimilarConfig (seed aside), so equal configs written differently match."""
    return json.dumps(load_settings(overrides).similar.model_dump(exclude={"seed"}), sort_keys=True)


def _cell(row: dict, key: str) -> str:
    if key not in row:
        return "-"
    return f"{row[key]:.4f} ± {row.get(f'{key}_std', 0.0):.4f}"


def print_tables(grid: list[dict], results: dict[str, dict], chosen: str, seeds: list[int]) -> None:
    print(f"\n## Grid (validation, mean ± std over seeds {seeds})\n")
    print(
        "| config | valid Recall@10 | valid Recall@50 | valid AUC hard | valid AUC soft | best epochs "
        "| valid Recall@10 at the start | valid Recall@10, float64 | valid R@10 served, trained "
        "| valid R@10 features alone |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for g in grid:
        mark = " **(chosen)**" if g["config"] == chosen else ""
        starts = ", ".join(f"{v:.4f}" for v in g["start_valid_recall_at_10"])
        print(
            f"| {g['config'] or '(defaults)'}{mark} | {_cell(g, 'valid_recall_at_10')} | "
            f"{_cell(g, 'valid_recall_at_50')} | {_cell(g, 'valid_auc_hard')} | "
            f"{_cell(g, 'valid_auc_soft')} | "
            f"{g['best_epochs']} of {g['epochs']} | {starts} | {_cell(g, 'exact_valid_recall_at_10')} | "
            f"{_cell(g, 'open_valid_recall_at_10')} | {_cell(g, 'cold_valid_recall_at_10')} |"
        )
    print(f"\n## Similar movies, test (mean ± std over seeds {seeds})\n")
    print("| method | " + " | ".join(HEADERS) + " |")
    print("|---|" + "---|" * len(HEADERS))
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(_cell(row, c) for c in COLUMNS) + " |")
    print(f"\n## Movies with and without enough positives, test (mean ± std over seeds {seeds})\n")
    print("| method | " + " | ".join(label for _, label in PATHS) + " |")
    print("|---|" + "---|" * len(PATHS))
    for name, row in results.items():
        if "cold_test_recall_at_10" in row:
            print(f"| {name} | " + " | ".join(_cell(row, key) for key, _ in PATHS) + " |")
    print("\nTriplet rows with float64 scores (cosine; L2 on centred vectors), a diagnostic:\n")
    print("| method | " + " | ".join(HEADERS) + " |")
    print("|---|" + "---|" * len(HEADERS))
    for name, row in results.items():
        if "exact_test_recall_at_10" in row:
            print(f"| {name} | " + " | ".join(_cell(row, f"exact_{c}") for c in COLUMNS) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2, help="parallel training processes")
    parser.add_argument(
        "--grid", action="append", default=[], help='"override override ..." (default: the built-in grid)'
    )
    parser.add_argument(
        "--set", action="append", default=[], help="override applied to every triplet run (repeatable)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 2 grid configs, 2 epochs, 2-epoch two-tower"
    )
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        help='"override override ...": also train this config with every seed (repeatable)',
    )
    parser.add_argument("--no-two-tower", action="store_true", help="skip the two-tower baseline")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    common = [*(QUICK_SET if args.quick else []), *args.set]
    grid_texts = args.grid or (QUICK_GRID if args.quick else DEFAULT_GRID)
    grid_configs = [[*common, *text.split()] for text in grid_texts]
    default_config = list(common)
    compare_configs = [[*common, *text.split()] for text in args.compare]
    for overrides in [*grid_configs, default_config, *compare_configs]:
        load_settings(overrides)  # fail now on a bad key, not after the grid
    two_tower_overrides = QUICK_TWO_TOWER if args.quick else []
    out = args.out or Path(__file__).parent / "results" / f"similar-{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    prepared, table = load_prepared(args.dataset), load_table(args.dataset)
    counts, overlap, leakage = table_counts(table), pairs.overlaps(table), pair_leakage(table)
    print(f"pairs: {len(table)} rows, {overlap['queries']} queries; {json.dumps(counts)}", flush=True)

    runs: dict[tuple[str, int], dict] = {}  # (config key, seed) -> triplet run
    two_tower: dict[int, dict] = {}  # seed -> two-tower run (its vectors start that seed's towers)
    pending: dict[Future, tuple[str, int] | None] = {}
    waiting: list[tuple[str, int]] = []  # fine-tuning runs whose seed's two-tower is not done yet
    grid_keys = [_config_key(c) for c in grid_configs]
    default_key = _config_key(default_config)
    compare_keys = [_config_key(c) for c in compare_configs]
    by_key = {
        k: c
        for k, c in zip(
            [*compare_keys, *grid_keys, default_key], [*compare_configs, *grid_configs, default_config]
        )
    }
    fine_tunes = {k for k, c in by_key.items() if load_settings(c).similar.init == "two_tower"}
    if fine_tunes and args.no_two_tower:
        parser.error("configs with similar.init=two_tower need the two-tower runs: drop --no-two-tower")

    context = multiprocessing.get_context("spawn")
    # a fresh process per run: a run's float rounding must not depend on what its process ran before
    pool_options: dict[str, Any] = {
        "mp_context": context,
        "initializer": _worker_init,
        "initargs": (args.dataset, table),
        "max_tasks_per_child": 1,
    }
    with ProcessPoolExecutor(args.workers, **pool_options) as pool:

        def submit_triplet(key: str, seed: int) -> None:
            if (key, seed) in runs or (key, seed) in pending.values() or (key, seed) in waiting:
                return
            if key in fine_tunes and seed not in two_tower:
                waiting.append((key, seed))
                return
            init = two_tower[seed]["vectors"] if key in fine_tunes else None
            pending[pool.submit(run_triplet, args.dataset, by_key[key], seed, init)] = (key, seed)

        if not args.no_two_tower:  # first: the fine-tuning runs wait for them
            for seed in args.seeds:
                pending[pool.submit(run_two_tower, args.dataset, two_tower_overrides, seed)] = None
        for key in dict.fromkeys([*grid_keys, default_key, *compare_keys]):
            for seed in args.seeds:
                submit_triplet(key, seed)
        results = genre_rows(prepared, table, args.seeds)  # in this process, while workers train
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in done:
                slot = pending.pop(future)
                run = future.result()
                if slot is None:
                    two_tower[run["seed"]] = run
                    what = f"two-tower seed {run['seed']}: valid Recall@10 (cosine) "
                    what += f"{run['by_distance']['cosine']['valid_recall_at_10']:.4f}"
                    for key, seed in [w for w in waiting if w[1] == run["seed"]]:
                        waiting.remove((key, seed))
                        submit_triplet(key, seed)
                else:
                    runs[slot] = run
                    what = f"triplet {' '.join(run['overrides']) or '(defaults)'} seed {run['seed']}: "
                    what += f"valid Recall@10 {run['valid_recall_at_10']:.4f} "
                    what += f"(start {run['start_valid_recall_at_10']:.4f}), best epoch {run['best_epoch']}"
                elapsed = time.perf_counter() - started
                print(f"[{elapsed:6.0f} s] {what}, {run['train_seconds']:.0f} s", flush=True)
    assert not waiting

    def mean_valid(key: str) -> float:
        return float(np.mean([np.mean([runs[(key, s)][c] for c in CHOICE]) for s in args.seeds]))

    chosen_key = max(grid_keys, key=mean_valid)
    print(f"chosen on validation: {' '.join(by_key[chosen_key]) or '(defaults)'}", flush=True)
    grid = []
    for k, c in zip(grid_keys, grid_configs):
        seeded = [runs[(k, s)] for s in args.seeds]
        row = summarise(seeded, {"config": " ".join(c), "defaults": k == default_key})
        row["best_epochs"] = [r["best_epoch"] for r in seeded]
        row["epochs"] = [r["epochs"] for r in seeded]
        row["start_valid_recall_at_10"] = [r["start_valid_recall_at_10"] for r in seeded]
        row["spread"] = seeded[0]["spread"]
        row["history"] = {r["seed"]: r["history"] for r in seeded}
        grid.append(row)
    rows: dict[str, dict] = {}
    defaults = load_settings(default_config).similar
    shown = f"init {defaults.init}, {defaults.distance}, margin {defaults.margin}, {defaults.mining}"
    shown += f", lr {defaults.learning_rate:g}, id dropout {defaults.id_dropout:g}"
    labels = [("triplet, chosen on validation", chosen_key)]
    if chosen_key != default_key:
        labels.append((f"triplet, SimilarConfig defaults ({shown})", default_key))
    else:
        labels[0] = (f"triplet, chosen on validation (= SimilarConfig defaults: {shown})", chosen_key)
    labels += [
        (f"triplet, {' '.join(by_key[k])}", k)
        for k in dict.fromkeys(compare_keys)
        if k not in dict(labels).values()
    ]
    best_random = max((k for k in grid_keys if k not in fine_tunes), key=mean_valid, default=None)
    if best_random is not None and best_random not in dict(labels).values():
        scratch = " ".join(by_key[best_random])
        labels.append((f"triplet from scratch, best on validation ({scratch})", best_random))
    for label, key in labels:
        seeded = [runs[(key, s)] for s in args.seeds]
        rows[label] = summarise(seeded, {"overrides": " ".join(by_key[key])})
        rows[label]["best_epochs"] = [r["best_epoch"] for r in seeded]
    for distance in ("cosine", "dot") if two_tower else ():
        seeded = [
            {"seed": r["seed"], "train_seconds": r["train_seconds"], "best_epoch": r["best_epoch"]}
            | r["by_distance"][distance]
            for r in two_tower.values()
        ]
        rows[f"two-tower item vectors, {distance}"] = summarise(
            seeded, {"overrides": " ".join(two_tower_overrides)}
        )
    rows.update(results)
    chosen_config = " ".join(by_key[chosen_key])
    print_tables(grid, rows, chosen_config, args.seeds)
    wall = time.perf_counter() - started
    out.write_text(
        json.dumps(
            {
                "dataset": args.dataset,
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "command": "benchmarks/similar.py " + shlex.join(sys.argv[1:]),
                "seeds": args.seeds,
                "workers": args.workers,
                "quick": args.quick,
                "wall_seconds": wall,
                "users": prepared.n_users,
                "items": prepared.n_items,
                "pairs_settings": load_settings().pairs.model_dump(),
                "similar_defaults": load_settings(default_config).similar.model_dump(),
                "git": git_state(),
                "pairs": {
                    "rows": len(table),
                    "hash": int(pd.util.hash_pandas_object(table, index=False).sum()),
                    "counts": counts,
                    "overlaps": overlap,
                    "leakage": leakage,
                },
                "common_overrides": common,
                "grid": grid,
                "chosen": {
                    "config": chosen_config,
                    "rule": "best validation Recall@10 over the seeds, the mean of the two served "
                    "paths: a trained vector, and features alone",
                    "similar": load_settings(by_key[chosen_key]).similar.model_dump(),
                    "is_default": chosen_key == default_key,
                },
                "results": rows,
            },
            indent=2,
        )
    )
    print(f"\nwall {wall:.0f} s; wrote {out}")


if __name__ == "__main__":
    main()
