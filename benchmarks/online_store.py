"""Online store speed: publish throughput of Feast's writer and the fast writer, and lookup latency.

Starts the project's embedded Redis on a free 127.0.0.1 port in a temporary home, applies a temporary
copy of feature_repo/ and publishes the same synthetic frames (--users lists of --k items, as many
histories of --history ids, --items titles) with both writers of `recsys.online.writer.publish`, alternating
feast, fast, feast, fast... on an emptied database, --repeats times each. It times:
- the online writes of each writer (users/s, median over --repeats; lists, histories and titles),
  and the whole publish (with the offline parquet record, the same for both);
- `recsys.online.reader.lookup` (median and p99 over --lookups calls, k=10 and k=100),
- Feast's own `get_online_features` for one user (median), for reference in the same run.

    .venv/bin/python benchmarks/online_store.py                      # MovieLens 20M shape, minutes
    .venv/bin/python benchmarks/online_store.py --users 20000 --repeats 3
Prints a table and writes benchmarks/results/online_store.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.config import PROJECT_ROOT, Settings, load_settings
from recsys.online import feast_repo, layout, writer
from recsys.online.reader import lookup
from recsys.ops import redis_server

WRITERS = ("feast", "fast")
LARGEST_MOVIE_ID = 131_262  # MovieLens 20M: ids up to 3-byte varints


@contextmanager
def temporary_store() -> Iterator[Settings]:
    """Settings for the embedded Redis on a free 127.0.0.1 port in a temporary home, running, with a
    temporary copy of feature_repo/ applied; all of it gone afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "feature_repo"
        shutil.copytree(PROJECT_ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("data"))
        settings = load_settings(
            [f"store.port={free_port()}", f"paths.feature_repo={repo}"],
            env={"RECSYS_HOME": str(Path(tmp) / "home")},
        )
        with redis_server.running(settings):
            feast_repo.apply(settings)
            yield settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def synthetic(args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(recs, catalogue, histories) of the shapes recsys.online.writer documents, MovieLens-sized ids."""
    rng = np.random.default_rng(0)
    movie_ids = np.sort(rng.choice(np.arange(1, LARGEST_MOVIE_ID + 1), args.items, replace=False))
    users = np.arange(1, args.users + 1)
    items = movie_ids[rng.integers(0, args.items, size=(args.users, args.k))]
    scores = -np.sort(-rng.random((args.users, args.k), dtype=np.float32), axis=1)
    seen = movie_ids[rng.integers(0, args.items, size=(args.users, args.history))]
    stamp = pd.Timestamp.now(tz="UTC")
    recs = pd.DataFrame(
        {
            "user_id": users,
            "item_ids": list(items),
            "scores": list(scores),
            "model_version": "1",
            "data_version": "synthetic",
            "event_timestamp": stamp,
        }
    )
    histories = pd.DataFrame(
        {"user_id": users, "movie_ids": list(seen), "data_version": "synthetic", "event_timestamp": stamp}
    )
    titles = [f"Amélie {m} (2001)" if m % 7 == 0 else f"Movie {m} (1999)" for m in movie_ids]
    return recs, pd.DataFrame({"movie_id": movie_ids, "title": titles}), histories


def publish_runs(frames: tuple[pd.DataFrame, ...], settings: Settings, repeats: int) -> dict[str, list]:
    """Each writer's publish results, alternating writers, each on an emptied database."""
    recs, catalogue, histories = frames
    conn = redis_server.client(settings.redis_connection)
    runs: dict[str, list] = {name: [] for name in WRITERS}
    try:
        for _ in range(repeats):
            for name in WRITERS:
                conn.flushdb()
                runs[name].append(writer.publish(recs, catalogue, settings, histories, writer=name))
    finally:
        conn.close()
    return runs


def latency(fn, calls: int) -> tuple[float, float]:
    times = []
    for i in range(calls):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, float(np.percentile(times, 99)) * 1e3


def lookup_rows(settings: Settings, users: np.ndarray, calls: int) -> dict[str, float]:
    rows = {}
    for k in (10, 100):
        med, p99 = latency(lambda i, k=k: lookup(int(users[i % len(users)]), k, settings), calls)
        rows[f"lookup_k{k}_median_ms"], rows[f"lookup_k{k}_p99_ms"] = med, p99
    fs = feast_repo.feature_store(settings)
    service = fs.get_feature_service(layout.FEATURE_SERVICE)
    rows["feast_get_online_features_median_ms"], _ = latency(
        lambda i: fs.get_online_features(
            features=service, entity_rows=[{"user_id": int(users[i % len(users)])}]
        ).to_dict(),
        min(calls, 200),
    )
    return rows


def summary(runs: dict[str, list], n_users: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name, results in runs.items():
        rows[f"{name}_online_median_s"] = statistics.median(r["online_seconds"] for r in results)
        rows[f"{name}_publish_median_s"] = statistics.median(r["seconds"] for r in results)
        rows[f"{name}_users_per_s"] = n_users / rows[f"{name}_online_median_s"]
    rows["ratio_fast_over_feast"] = rows["fast_users_per_s"] / rows["feast_users_per_s"]
    rows["ratio_fast_over_feast_whole_publish"] = (
        rows["feast_publish_median_s"] / rows["fast_publish_median_s"]
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=138_493, help="lists (and histories) to publish")
    parser.add_argument("--items", type=int, default=27_278, help="titles in the catalogue")
    parser.add_argument("--k", type=int, default=100, help="items per list")
    parser.add_argument("--history", type=int, default=100, help="movie ids per history")
    parser.add_argument("--repeats", type=int, default=3, help="publishes per writer (>= 3 for a median)")
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "online_store.json")
    args = parser.parse_args()
    frames = synthetic(args)
    with temporary_store() as settings:
        runs = publish_runs(frames, settings, args.repeats)
        users = frames[0]["user_id"].to_numpy()
        rows = {**summary(runs, args.users), **lookup_rows(settings, users, args.lookups)}
    print(
        f"{args.users} users x (k={args.k} list + {args.history}-id history), {args.items} titles; "
        f"{args.repeats} publishes per writer, {args.lookups} lookups"
    )
    for name, value in rows.items():
        print(f"{name:40s} {value:12.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "publish_runs": runs, **rows}, indent=2
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
