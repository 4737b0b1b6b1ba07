"""Takedowns: what a blocklist costs a lookup (`recsys.online.reader.lookup`, k=10 and k=100).

Starts the project's embedded Redis on a free 127.0.0.1 port in a temporary home, publishes --users
synthetic lists of 100 MovieLens-sized movie ids (benchmarks/online_store.py's frames, fast writer),
then times --lookups lookups of random users with 0, 10 and 1,000 blocked movies (drawn from the
catalogue, so lists hold some of them). The lists are published with their arms record, as the
nightly publish leaves them, so each lookup also reads the versions it may serve. The three sizes
take turns for --rounds rounds on the same
users (a noisy machine slows all three alike); each figure is the median over rounds of that round's
median or p99, and the ratio is to 0 blocked movies in the same run.

    .venv/bin/python benchmarks/takedowns.py
Prints a table and writes benchmarks/results/takedowns.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

import numpy as np
from online_store import latency, synthetic, temporary_store  # a sibling script (benchmarks/ on sys.path)

from recsys.online import blocklist, writer
from recsys.online.reader import lookup
from recsys.runtime.arms import Arms

SIZES = (0, 10, 1_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000, help="lists to publish")
    parser.add_argument("--items", type=int, default=27_278, help="movies in the catalogue")
    parser.add_argument("--lookups", type=int, default=1_000, help="lookups per size and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "takedowns.json")
    args = parser.parse_args()
    logging.getLogger("recsys.online.blocklist").setLevel(logging.ERROR)  # no line per block
    frame_args = argparse.Namespace(users=args.users, items=args.items, k=100, history=100)
    recs, catalogue, histories = synthetic(frame_args)
    rng = np.random.default_rng(1)
    users = rng.choice(recs["user_id"].to_numpy(), args.lookups)
    order = rng.permutation(catalogue["movie_id"].to_numpy())
    lists = {int(u): [int(m) for m in items] for u, items in zip(recs["user_id"], recs["item_ids"])}
    measured: dict[str, list[float]] = {}
    with temporary_store() as settings:
        # with the arms record, as the nightly publish leaves it: every lookup reads it too
        writer.publish(recs, catalogue, settings, histories, arms=Arms("1"))
        for _ in range(args.rounds):
            for size in SIZES:
                for movie in list(blocklist.blocked(settings)):
                    blocklist.unblock(movie, settings, by="benchmark")
                for movie in order[:size]:
                    blocklist.block(int(movie), settings, reason="benchmark", by="benchmark")
                gone = {int(m) for m in order[:size]}
                # "k=100": the whole list, which holds 100 less its blocked movies
                whole = [100 - sum(m in gone for m in lists[int(u)]) for u in users]
                for k in (10, 100):
                    asks = [10] * len(users) if k == 10 else whole
                    med, p99 = latency(lambda i, a=asks: lookup(int(users[i]), a[i], settings), args.lookups)
                    measured.setdefault(f"blocked_{size}_k{k}_median_ms", []).append(med)
                    measured.setdefault(f"blocked_{size}_k{k}_p99_ms", []).append(p99)
    rows = {name: statistics.median(values) for name, values in measured.items()}
    for size in SIZES[1:]:
        for k in (10, 100):
            for stat in ("median", "p99"):
                base = rows[f"blocked_0_k{k}_{stat}_ms"]
                rows[f"ratio_blocked_{size}_over_0_k{k}_{stat}"] = (
                    rows[f"blocked_{size}_k{k}_{stat}_ms"] / base
                )
    print(f"{args.users} lists of 100, {args.lookups} lookups per size and round, {args.rounds} rounds")
    print(f"{'blocked':>8} {'k':>4} {'median ms':>10} {'p99 ms':>8} {'p99 / 0 blocked':>16}")
    for size in SIZES:
        for k in (10, 100):
            ratio = rows.get(f"ratio_blocked_{size}_over_0_k{k}_p99", 1.0)
            print(
                f"{size:8d} {k:4d} {rows[f'blocked_{size}_k{k}_median_ms']:10.3f} "
                f"{rows[f'blocked_{size}_k{k}_p99_ms']:8.3f} {ratio:16.2f}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"args": {k: str(v) for k, v in vars(args).items()}, "rounds": measured, **rows}
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
