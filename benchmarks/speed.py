"""Speed of the serving path: ONNX Runtime batch scoring vs PyTorch, and the online lookup.

Synthetic model at MovieLens-20M scale by default (138,493 users x 26,744 items, dim 64), random
weights (speed does not depend on training). Figures are medians over --repeats runs, plus the ratio
ONNX/PyTorch measured in the same run (these machines are shared and noisy).

    .venv/bin/python benchmarks/speed.py --users 138493 --items 26744 --repeats 3
Prints a table and writes benchmarks/results/speed.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from recsys.config import ModelConfig
from recsys.bundle import OnnxRetriever, pad_lists
from recsys.export import TopKRetrieval, export_onnx
from recsys.model import TwoTower


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=138_493)
    parser.add_argument("--items", type=int, default=26_744)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--seen", type=int, default=100, help="seen items per user (masked)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tower", choices=["sasrec", "mean", "id"], default="sasrec",
                        help="user tower; history towers read a full 50-item history per user")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "speed.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = TwoTower(args.users, args.items, ModelConfig(user_tower=args.tower)).eval()
    rng = np.random.default_rng(0)
    seen = [rng.choice(args.items, size=args.seen, replace=False) for _ in range(args.users)]
    if model.reads_history:
        inputs = np.stack([s[-model.cfg.history_length:] for s in seen])  # [U, H]
    else:
        inputs = np.arange(args.users)
    with tempfile.TemporaryDirectory() as tmp:
        retriever = OnnxRetriever(export_onnx(model, Path(tmp) / "m.onnx", args.k), args.items)
        wrapper = TopKRetrieval(model, args.k).eval()
        batches = [np.arange(s, min(s + args.batch_size, args.users))
                   for s in range(0, args.users, args.batch_size)]

        def onnx_all() -> None:
            for b in batches:
                retriever.recommend(inputs[b], [seen[u] for u in b])

        @torch.no_grad()
        def torch_all() -> None:
            for b in batches:
                wrapper(torch.from_numpy(inputs[b]),
                        torch.from_numpy(pad_lists([seen[u] for u in b], args.items)))

        onnx_s, torch_s = timed(onnx_all, args.repeats), timed(torch_all, args.repeats)
    rows = {
        "onnxruntime_all_users_s": statistics.median(onnx_s),
        "pytorch_all_users_s": statistics.median(torch_s),
        "onnx_users_per_s": args.users / statistics.median(onnx_s),
        "ratio_onnx_over_pytorch": statistics.median(o / t for o, t in zip(onnx_s, torch_s)),
    }
    print(f"{args.tower} tower, {args.users} users x {args.items} items, k={args.k}, batch {args.batch_size}, "
          f"{args.repeats} repeats, torch threads {torch.get_num_threads()}")
    for name, value in rows.items():
        print(f"{name:28s} {value:12.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                    "onnx_runs_s": onnx_s, "torch_runs_s": torch_s, **rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
