"""Because you liked X: which history movie should explain a recommended one? Four rules measured on
the lists a trained champion serves.

The rules, for a recommended movie i of user u, over the history the user tower read (the last H
positives the model knows; recsys.runtime.explain):

- ``cosine``: the history movie whose item vector is closest in cosine to i's (the default);
- ``dot``: the same with the raw dot product (favours movies with long vectors: popular ones);
- ``recent``: the user's most recent positive, whatever i is;
- ``influence``: leave-one-out, the history movie whose removal lowers i's score the most
  ((u - u_without_j) . v_i): what the model's score really leans on, at H tower passes per user.

A user-level rule such as the largest attention weight of the last position gives one movie for the
whole list, as ``recent`` does; ``distinct@10`` shows what that costs.

Measured per rule over every user with a model list, on its first 10 movies (what a person sees):

- ``agree_influence``: share of (user, movie) pairs whose reason is the leave-one-out one;
- ``influence_rank``: mean rank of the reason in the leave-one-out order (1: the most influential);
- ``in_similar``: share of reasons among the recommended movie's ``movie_similar`` list (one
  measure of sense; that model starts from the champion's item vectors, so it is not independent
  of ``cosine``);
- ``co_liked``: share of (reason, movie) pairs that the pairwise table (recsys.data.pairs) holds as
  positives: liked by the same users more often than chance, a fact of the data, not of a model;
- ``distinct@10``: distinct reasons per list of 10;
- ``ms_per_1k_users``: the rule's own time per 1,000 users (medians of 3 runs).

The chain runs first (``recsys run`` in a temporary RECSYS_HOME, default settings), so the champion
and the similar-movies lists are the ones a night would serve. Writes
``benchmarks/results/explain-<dataset>.json`` with a handful of real examples.

    .venv/bin/python benchmarks/explain.py                                   # the bundled sample
    .venv/bin/python benchmarks/explain.py --synth small --users 3000 --movies 2000 --ratings 250000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RECSYS = str(Path(sys.executable).parent / "recsys")
TOP = 10
Rule = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (recommended [B, K], history [B, H]) -> [B, K]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chain_env(home: Path, source: Path | None, port: int) -> dict[str, str]:
    """The environment of a chain in ``home`` (its own Redis port and feature repo copy)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS")}
    env.update(RECSYS_HOME=str(home), RECSYS__STORE__PORT=str(port), RECSYS__TRAIN__PROGRESS_BAR="false")
    env["RECSYS__PATHS__FEATURE_REPO"] = str(home / "feature_repo")
    if source is not None:
        env.update(RECSYS__DATA__SOURCE=str(source), RECSYS__DATA__DATASET="ml-1m")
    return env


def run_chain(env: dict[str, str]) -> None:
    """``recsys run`` (default settings) in the chain's home."""
    repo = Path(env["RECSYS__PATHS__FEATURE_REPO"])
    if not repo.exists():
        shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    done = subprocess.run([RECSYS, "run"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"recsys run failed:\n{done.stderr[-3000:]}")


def leave_one_out(bundle, history: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:  # noqa: ANN001
    """Per user: the real history items [L] and the change of the user vector when each is left out
    [L, D] (the history left-padded again, as if it had never been rated); the tower's own graph."""
    tower, pad = bundle.retriever, bundle.n_items
    variants, owners = [], []
    for row, seq in enumerate(history):
        for j in np.flatnonzero(seq != pad):
            variants.append(np.concatenate([[pad], np.delete(seq, j)]))
            owners.append(row)
    full = np.vstack([tower.user_vectors(history[i : i + 1024]) for i in range(0, len(history), 1024)])
    without = (
        np.vstack(
            [tower.user_vectors(np.asarray(variants[i : i + 1024])) for i in range(0, len(variants), 1024)]
        )
        if variants
        else np.empty((0, full.shape[1]), np.float32)
    )
    owners_a = np.asarray(owners, dtype=np.int64)
    starts = np.searchsorted(owners_a, np.arange(len(history) + 1))
    return [
        (seq[seq != pad], full[row] - without[starts[row] : starts[row + 1]])
        for row, seq in enumerate(history)
    ]


def influence(vectors: np.ndarray, effects: list, lists: np.ndarray) -> list[np.ndarray]:
    """Per user: how much each history item's removal lowers each listed movie's score, [L, K]."""
    return [delta @ vectors[items].T for (_, delta), items in zip(effects, lists)]


def rules(bundle, vectors: np.ndarray) -> dict[str, Rule]:  # noqa: ANN001
    from recsys.runtime.explain import because

    unit = bundle.unit_item_vectors
    raw = np.vstack([vectors, np.zeros((1, vectors.shape[1]), np.float32)])

    def recent(recommended: np.ndarray, history: np.ndarray) -> np.ndarray:
        last = history[:, -1:]
        return np.where(last == bundle.n_items, -1, np.broadcast_to(last, recommended.shape))

    def loo(recommended: np.ndarray, history: np.ndarray) -> np.ndarray:
        effects = leave_one_out(bundle, history)
        out = np.full(recommended.shape, -1, dtype=np.int64)
        for row, ((items, _), drops) in enumerate(zip(effects, influence(vectors, effects, recommended))):
            if len(items):
                out[row] = items[drops.argmax(axis=0)]
        return out

    return {
        "cosine": lambda rec, hist: because(unit, rec, hist),
        "dot": lambda rec, hist: because(raw, rec, hist),
        "recent": recent,
        "influence": loo,
    }


def similar_sets(home: Path) -> dict[int, set[int]]:
    """movie_id -> the movies of its movie_similar list (the served similar-movies lists)."""
    paths = sorted((home / "similar").glob("v*/similar.parquet"), key=lambda p: int(p.parent.name[1:]))
    if not paths:
        raise SystemExit(f"no similar.parquet under {home / 'similar'}")
    lists = pd.read_parquet(paths[-1], columns=["movie_id", "movie_ids"])
    return {int(m): set(map(int, ids)) for m, ids in zip(lists["movie_id"], lists["movie_ids"])}


def co_liked_pairs(home: Path) -> set[tuple[int, int]]:
    """The positive pairs of the mined pairwise table, both orders (movie ids)."""
    paths = sorted((home / "data" / "pairs").rglob("pairs.parquet"))
    if not paths:
        raise SystemExit(f"no pairs.parquet under {home / 'data' / 'pairs'}")
    table = pd.read_parquet(paths[-1], columns=["movie_id_first", "movie_id_second", "kind"])
    positive = table[table["kind"] == "positive"]
    pairs = list(zip(positive["movie_id_first"].astype(int), positive["movie_id_second"].astype(int)))
    return set(pairs) | {(b, a) for a, b in pairs}


def _in_batches(rule: Rule, lists: np.ndarray, history: np.ndarray) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    found = np.vstack([rule(lists[i : i + 1024], history[i : i + 1024]) for i in range(0, len(lists), 1024)])
    return found, time.perf_counter() - start


def measure(  # noqa: ANN001 - bundle: a recsys ModelBundle
    bundle, history: np.ndarray, lists: np.ndarray, similar: dict[int, set[int]], co_liked: set
) -> dict:
    """The module docstring's figures per rule; ``lists`` [U, TOP] item indices of model lists.
    The influence rule recomputes the leave-one-out effects on purpose: its time is its cost."""
    vectors = np.load(bundle.folder / "item_vectors.npy")
    effects = leave_one_out(bundle, history)
    drops = influence(vectors, effects, lists)
    movie = bundle.movie_ids
    out = {}
    for name, rule in rules(bundle, vectors).items():
        runs = [_in_batches(rule, lists, history) for _ in range(1 if name == "influence" else 3)]
        reasons = runs[0][0]
        ranks, agree, in_similar, together = [], [], [], []
        for row, ((items, _), d) in enumerate(zip(effects, drops)):
            if not len(items):
                continue
            best = d.max(axis=0)
            for k, reason in enumerate(reasons[row]):
                mine = d[items == reason, k].max()
                ranks.append(1 + int((d[:, k] > mine).sum()))
                agree.append(mine >= best[k])
                pair = (int(movie[reason]), int(movie[lists[row, k]]))
                in_similar.append(pair[0] in similar.get(pair[1], set()))
                together.append(pair in co_liked)
        out[name] = {
            "agree_influence": round(float(np.mean(agree)), 4),
            "influence_rank": round(float(np.mean(ranks)), 2),
            "in_similar": round(float(np.mean(in_similar)), 4),
            "co_liked": round(float(np.mean(together)), 4),
            "distinct@10": round(float(np.mean([len(set(r.tolist())) for r in reasons])), 2),
            "ms_per_1k_users": round(statistics.median(t for _, t in runs) / len(lists) * 1e6, 1),
        }
    return out


def examples(bundle, inputs, recs: pd.DataFrame, n: int = 6) -> list[dict]:  # noqa: ANN001
    """A handful of real lists: the first three movies of a few users, each with its reason."""
    titles = bundle.titles
    rng = np.random.default_rng(0)
    model = recs[recs["source"] == "model"]
    picked = model.iloc[rng.choice(len(model), size=min(n, len(model)), replace=False)]
    return [
        {
            "user_id": int(row.user_id),
            "liked_recently": [titles[int(m)] for m in row.history if int(m) in titles][-3:],
            "recommended": [
                {"movie": titles.get(int(m), ""), "because": titles.get(int(b), "")}
                for m, b in zip(row.item_ids[:3], row.because_ids[:3])
            ],
        }
        for row in picked.sort_values("user_id").itertuples()
    ]


def render(report: dict) -> str:
    """The README's table of the rules (tests/unit/test_readme.py holds the two equal)."""
    lines = [
        "| rule | agrees with leave-one-out | its leave-one-out rank | in `movie_similar` | co-liked pair "
        "| distinct reasons in 10 | ms per 1,000 users |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rule, f in report["rules"].items():
        name = f"`{rule}`" + (" (chosen)" if rule == report["chosen"] else "")
        lines.append(
            f"| {name} | {f['agree_influence']:.1%} | {f['influence_rank']:.2f} | {f['in_similar']:.1%} "
            f"| {f['co_liked']:.1%} | {f['distinct@10']:.2f} | {f['ms_per_1k_users']:,.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synth", help="a `recsys synth` preset instead of the bundled sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--users", type=int, help="with --synth: users (the preset's by default)")
    parser.add_argument("--movies", type=int, help="with --synth: movies")
    parser.add_argument("--ratings", type=int, help="with --synth: ratings")
    parser.add_argument("--home", type=Path, help="keep the chain's RECSYS_HOME here (default: temporary)")
    parser.add_argument("--reuse", action="store_true", help="read the chain already run in --home")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from recsys.config import load_settings
    from recsys.ops.registry import Registry
    from recsys.runtime.scoring import explained_history, read_activity, score_users, user_inputs
    from recsys.runtime.two_tower import ModelBundle

    size = "".join(f"-{getattr(args, f)}{f[0]}" for f in ("users", "movies", "ratings") if getattr(args, f))
    name = f"synth-{args.synth}{size}" if args.synth else "ml-latest-small"
    out = args.out or ROOT / "benchmarks" / "results" / f"explain-{name}.json"
    home = args.home or Path(tempfile.mkdtemp(prefix="recsys-explain-"))
    home.mkdir(parents=True, exist_ok=True)
    source = home / "release" if args.synth else None
    env = chain_env(home, source, free_port())
    started = time.perf_counter()
    if not args.reuse:
        if source is not None:
            synth = ["synth", "--preset", args.synth, "--seed", str(args.seed), "--out", str(source)]
            for flag in ("users", "movies", "ratings"):
                if getattr(args, flag):
                    synth += [f"--{flag}", str(getattr(args, flag))]
            subprocess.run([RECSYS, *synth], check=True, capture_output=True)
        run_chain(env)
    chain_s = time.perf_counter() - started
    settings = load_settings([], env=env)
    version, folder = Registry.open(settings).download_bundle("champion")
    bundle = ModelBundle.load(folder)
    prepared = sorted((home / "data").rglob("activity.parquet"))[-1].parent
    inputs = user_inputs(read_activity(prepared), bundle)
    recs = score_users(bundle, inputs, version, "explain")
    personal = np.flatnonzero(inputs.personal)
    lists = np.vstack([bundle.item_index(recs["item_ids"][r][:TOP]) for r in personal])
    history = explained_history(bundle, inputs)[personal]
    figures = measure(bundle, history, lists, similar_sets(home), co_liked_pairs(home))
    report = {
        "dataset": name,
        "command": " ".join(["benchmarks/explain.py", *sys.argv[1:]]),
        "model_version": version,
        "users": len(personal),
        "top": TOP,
        "history_length": bundle.history_length,
        "mean_history": round(float((history != bundle.n_items).sum(axis=1).mean()), 1),
        "chain_seconds": None if args.reuse else round(chain_s, 1),
        "rules": figures,
        "chosen": "cosine",
        "examples": examples(bundle, inputs, recs),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    head = ("agree LOO", "LOO rank", "in similar", "co-liked", "distinct@10", "ms/1k users")
    print(f"{'rule':10s} " + " ".join(f"{h:>12s}" for h in head))
    for rule, f in figures.items():
        print(f"{rule:10s} {f['agree_influence']:12.3f} {f['influence_rank']:12.2f} {f['in_similar']:12.3f} "
              f"{f['co_liked']:12.3f} "
              f"{f['distinct@10']:12.2f} {f['ms_per_1k_users']:12.1f}")  # fmt: skip
    print(f"{len(personal)} users, top {TOP}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
