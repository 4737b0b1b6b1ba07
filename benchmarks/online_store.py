"""Online store speed: Feast publish throughput into Redis and the lookup latency.

Starts the project's embedded Redis on a free 127.0.0.1 port in a temporary home, applies a temporary
copy of feature_repo/, publishes synthetic lists (--users x --k) and times:
- publish (users/s, median over --repeats),
- `recsys.lookup.lookup` (median and p99 over --lookups calls, k=10 and k=100),
- Feast's own `get_online_features` for one user (median), for reference in the same run.

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
from pathlib import Path

import numpy as np
import pandas as pd

from recsys import redis_server, store
from recsys.config import PROJECT_ROOT, load_settings
from recsys.lookup import lookup


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def synthetic(n_users: int, n_items: int, k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    items = [rng.choice(n_items, size=k, replace=False) + 1 for _ in range(n_users)]
    scores = [np.sort(rng.random(k).astype(np.float32))[::-1] for _ in range(n_users)]
    recs = pd.DataFrame({"user_id": np.arange(1, n_users + 1), "item_ids": items, "scores": scores,
                         "model_version": "1", "data_version": "synthetic", "event_timestamp": pd.Timestamp.now(tz="UTC")})
    catalogue = pd.DataFrame({"movie_id": np.arange(1, n_items + 1),
                              "title": [f"Movie {i}" for i in range(1, n_items + 1)]})
    return recs, catalogue


def latency(fn, calls: int) -> tuple[float, float]:
    times = []
    for i in range(calls):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, float(np.percentile(times, 99)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "online_store.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "feature_repo"
        shutil.copytree(PROJECT_ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("data"))
        settings = load_settings([f"store.port={free_port()}", f"paths.feature_repo={repo}"],
                                 env={"RECSYS_HOME": str(Path(tmp) / "home")})
        with redis_server.running(settings):
            store.apply(settings)
            recs, catalogue = synthetic(args.users, args.items, args.k)
            publish_s = [store.publish(recs, catalogue, settings)["seconds"] for _ in range(args.repeats)]
            users = recs["user_id"].to_numpy()
            rows = {"publish_users_per_s": args.users / statistics.median(publish_s)}
            for k in (10, 100):
                med, p99 = latency(lambda i: lookup(int(users[i % len(users)]), k, settings), args.lookups)
                rows[f"lookup_k{k}_median_ms"], rows[f"lookup_k{k}_p99_ms"] = med, p99
            fs = store.feature_store(settings)
            service = fs.get_feature_service("recommendations_v1")
            med, _ = latency(lambda i: fs.get_online_features(
                features=service, entity_rows=[{"user_id": int(users[i % len(users)])}]).to_dict(),
                min(args.lookups, 200))
            rows["feast_get_online_features_median_ms"] = med
    print(f"{args.users} users x k={args.k}, {args.repeats} publishes, {args.lookups} lookups")
    for name, value in rows.items():
        print(f"{name:40s} {value:12.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                    "publish_runs_s": publish_s, **rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
