"""Speed of nightly scoring against its hardware floor, in one run.

Synthetic model at MovieLens-20M scale by default (138,493 users x 26,744 items, dim 64, K=100,
100 seen items masked per user), random weights (speed does not depend on training), with the
default content item tower over titles, genres and tags from `recsys synth`'s generator (the SASRec
tower reads its history from the item table). Each repeat times, over the same batches:

- floor: the bare ONNX Runtime MatMul of all user vectors against all item vectors;
- retrieval: that MatMul + the seen mask + the exact top-K (recsys.runtime.topk), i.e. what scoring adds;
- tower: the user tower alone (history -> user vectors), as nightly scoring runs it: the exported
  scoring graph (recsys.models.two_tower.scoring_tower), one part of each batch per core;
- tower_reference: the tower as exported before issue 22, for the ratio: the training-time
  module's graph, one ONNX Runtime run per batch over every core;
- nightly: the whole call nightly scoring makes (FastRetriever.recommend_batches: tower +
  retrieval, the tower a wave of batches ahead);
- nightly_in_turn: the same, each batch's tower, MatMul and top-K in turn (FastRetriever.recommend);
- graph: the end-to-end retrieval graph (model.onnx, ONNX Runtime's TopK), the previous path;
- fresh floor and fresh retrieval: the same two over tonight's catalogue, the trained items plus
  ``--fresh`` movies new since training, embedded from their features by ``item_tower.onnx``,
  the retrieval with the last ``score.fresh_slots`` places kept for them (recsys.runtime.fresh,
  inside the top-K kernel), as nightly scoring runs it.

Ratios are taken per repeat (both sides measured back to back), then the median, min and max.
The nightly lists are checked to equal the end-to-end graph's on every user, and compared with a
float32 PyTorch reference (the model's own user_vectors, dot products, seen masked, top-K) on
``--agreement-users`` users: the share of equal lists and the top-10 and top-100 overlaps.

Then the same floor and retrieval in the layout Airflow runs nightly scoring in (``make airflow``:
one mapped shard task per core, ``score.threads=1``): ``--shards`` processes side by side, one
thread each, each over every ``--shards``-th user, started together. A repeat's time is the slowest
shard's; the shards' lists are checked to equal the one-process lists.

    .venv/bin/python benchmarks/speed.py --repeats 5
Prints a table and writes benchmarks/results/speed.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import pandas as pd
import torch

from recsys.config import ModelConfig, ScoreConfig
from recsys.data.features import Vocabulary
from recsys.data.synth.catalogue import catalogue
from recsys.data.synth.metadata import Names, titles
from recsys.data.synth.params import CLUSTER_TAGS
from recsys.models.onnx_export import export_graph
from recsys.models.two_tower.export import TopKRetrieval, example_inputs, export_onnx, export_scoring
from recsys.models.two_tower.hardware import cpu_flags, cpu_model
from recsys.models.two_tower.model import TwoTower
from recsys.runtime.content import embed_movies
from recsys.runtime.onnx import session
from recsys.runtime.topk import masked_topk
from recsys.runtime.two_tower import FastRetriever, OnnxRetriever, pad_lists

VECTOR_FLAGS = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"}  # the MatMul's


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def movies(n: int, seed: int = 0) -> pd.DataFrame:
    """Titles, genres and up to 3 tags of ``n`` movies from recsys synth's generator."""
    rng = np.random.default_rng(seed)
    cat = catalogue(rng, n)
    names = Names(rng, int(cat.clusters.max()) + 1, int(cat.themes.max()) + 1)
    picks = rng.integers(0, CLUSTER_TAGS, (n, 3))
    count = rng.integers(0, 4, n)
    tags = ["|".join(names.tags[c, picks[i, : count[i]]]) for i, c in enumerate(cat.clusters)]
    frame = {"title": titles(rng, names, cat.clusters, cat.themes, cat.years), "genres": cat.genres}
    return pd.DataFrame({**frame, "tags": tags})


class ReferenceTower(torch.nn.Module):
    """The user tower as exported before issue 22: the training-time module itself."""

    def __init__(self, model: TwoTower) -> None:
        super().__init__()
        self.model = model

    def forward(self, history: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return self.model.user_vectors(history=history, table=table)


def reference_tower(model: TwoTower, table: np.ndarray, folder: Path) -> Path:
    """Export :class:`ReferenceTower` (a content SASRec tower reading ``table``) to ``folder``."""
    path, batch = folder / "reference.onnx", torch.export.Dim("batch")
    length = torch.export.Dim("length", min=2, max=model.cfg.history_length)
    shapes = {"history": {0: batch, 1: length}, "table": {0: torch.export.Dim("rows", min=3)}}
    inputs, names = (example_inputs(model)[0], torch.from_numpy(table)), ["history", "item_table"]
    export_graph(ReferenceTower(model).eval(), inputs, names, ["user_vectors"], shapes, path)
    return path


def agreement(model: TwoTower, inputs: np.ndarray, seen: list, lists: np.ndarray, k: int) -> dict:
    """Nightly lists against a float32 PyTorch reference on the same users (the model's own
    :class:`TopKRetrieval`): the share of equal lists and the mean top-10 and top-K overlaps."""
    with torch.no_grad():
        padded = torch.from_numpy(pad_lists(seen, model.n_items))
        reference = TopKRetrieval(model, k)(torch.from_numpy(inputs), padded)[0].numpy()

    def overlap(n: int) -> float:
        return float(np.mean([len(set(a[:n]) & set(b[:n])) / n for a, b in zip(lists, reference)]))

    return {
        "users": len(lists),
        "equal_lists": float(np.mean([np.array_equal(a, b) for a, b in zip(lists, reference)])),
        "top10_overlap": overlap(min(10, k)),
        f"top{k}_overlap": overlap(k),
    }


def model_for(args: argparse.Namespace, catalogue_: pd.DataFrame) -> TwoTower:
    """Random weights; a content item tower reads the first ``args.items`` movies' features."""
    cfg = ModelConfig(item_tower=args.item_tower, user_tower=args.tower)
    if args.item_tower == "id":
        return TwoTower(args.users, args.items, cfg).eval()
    trained = catalogue_.iloc[: args.items]
    vocabulary = Vocabulary.fit(trained, cfg.content_min_count)
    return TwoTower(args.users, args.items, cfg, None, vocabulary, vocabulary.encode(trained)).eval()


def shard(
    rank: int, n_shards: int, folder: str, k: int, batch_size: int, repeats: int, barrier, results
) -> None:  # noqa: ANN001 - multiprocessing objects
    """One scoring shard with one thread: floor and retrieval over users rank::n_shards."""
    tower, items = Path(folder) / "user_tower.onnx", Path(folder) / "item_vectors.npy"
    fast = FastRetriever(tower, items, k, threads=1)
    vectors = np.load(Path(folder) / "vectors.npy")[rank::n_shards]
    offsets = np.load(Path(folder) / "seen_offsets.npy")
    flat = np.load(Path(folder) / "seen_flat.npy")
    users = np.arange(len(offsets) - 1)[rank::n_shards]
    seen = [flat[offsets[u] : offsets[u + 1]] for u in users]
    starts = range(0, len(users), batch_size)
    masked_topk(fast.scores(vectors[:batch_size]), seen[:batch_size], k, fast.threads)  # warm up
    times: dict[str, list[float]] = {"floor": [], "retrieval": []}
    lists = []
    for _ in range(repeats):
        for name in times:
            barrier.wait()
            start = time.perf_counter()
            for s in starts:
                scores = fast.scores(vectors[s : s + batch_size])
                if name == "retrieval":
                    top = masked_topk(scores, seen[s : s + batch_size], k, fast.threads)[0]
                    if len(lists) < len(starts):  # the first repeat's lists, for the check
                        lists.append(top)
            times[name].append(time.perf_counter() - start)
    np.save(Path(folder) / f"shard-{rank}.npy", np.concatenate(lists))
    results.put((rank, times))


def shards(
    n_shards: int,
    folder: Path,
    vectors: list[np.ndarray],
    seen: list[np.ndarray],
    lists: np.ndarray,
    args: argparse.Namespace,
) -> dict:
    """Floor and retrieval in ``n_shards`` one-thread processes (see the module docstring)."""
    np.save(folder / "vectors.npy", np.concatenate(vectors))
    offsets = np.zeros(len(seen) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in seen], out=offsets[1:])
    np.save(folder / "seen_offsets.npy", offsets)
    np.save(folder / "seen_flat.npy", np.concatenate(seen))
    context = mp.get_context("spawn")  # no inherited ONNX Runtime or OpenMP thread pools
    barrier, results = context.Barrier(n_shards), context.Queue()
    procs = [
        context.Process(
            target=shard,
            args=(r, n_shards, str(folder), args.k, args.batch_size, args.repeats, barrier, results),
        )
        for r in range(n_shards)
    ]
    for proc in procs:
        proc.start()
    times = dict(results.get(timeout=1800) for _ in procs)
    for proc in procs:
        proc.join()
    runs = {
        name: [max(times[r][name][i] for r in times) for i in range(args.repeats)]
        for name in ("floor", "retrieval")
    }
    same = all(
        np.array_equal(np.load(folder / f"shard-{r}.npy"), lists[r::n_shards]) for r in range(n_shards)
    )
    return {
        "n_shards": n_shards,
        "threads_per_shard": 1,
        "runs_s": runs,
        "seconds": {name: summary(values) for name, values in runs.items()},
        "retrieval_over_floor": summary([r / f for r, f in zip(runs["retrieval"], runs["floor"])]),
        "lists_equal_one_process": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=138_493)
    parser.add_argument("--items", type=int, default=26_744)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=ScoreConfig().batch_size)
    parser.add_argument("--seen", type=int, default=100, help="seen items per user (masked)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--tower",
        choices=["sasrec", "mean", "id"],
        default="sasrec",
        help="user tower; history towers read a full 50-item history per user",
    )
    parser.add_argument(
        "--item-tower", choices=["content", "id"], default=ModelConfig().item_tower, help="item tower"
    )
    parser.add_argument("--fresh", type=int, default=100, help="movies new since training (content)")
    parser.add_argument(
        "--shards",
        type=int,
        default=os.cpu_count() or 2,
        help="processes side by side for the shard layout (default: one per core)",
    )
    parser.add_argument(
        "--agreement-users", type=int, default=4096, help="users compared with the PyTorch reference"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "speed.json")
    args = parser.parse_args()
    if args.agreement_users < 1:
        parser.error(f"--agreement-users must be at least 1, got {args.agreement_users}")
    torch.manual_seed(0)
    catalogue_ = movies(args.items + args.fresh)
    model = model_for(args, catalogue_)
    rng = np.random.default_rng(0)
    seen = [rng.choice(args.items, size=args.seen, replace=False) for _ in range(args.users)]
    if model.reads_history:
        inputs = np.stack([s[-model.cfg.history_length :] for s in seen])  # [U, H]
    else:
        inputs = np.arange(args.users)
    batches = [
        np.arange(s, min(s + args.batch_size, args.users)) for s in range(0, args.users, args.batch_size)
    ]
    seen_of = [[seen[u] for u in b] for b in batches]
    with tempfile.TemporaryDirectory() as tmp:
        graph = OnnxRetriever(export_onnx(model, Path(tmp) / "m.onnx", args.k), args.items)
        fast = FastRetriever(*export_scoring(model, Path(tmp)), args.k)
        reference = None  # the tower as exported before issue 22 (a content SASRec tower)
        if model.cfg.user_tower == "sasrec" and fast.table is not None:
            reference = session(reference_tower(model, fast.table, Path(tmp)), None)
        vectors = [fast.user_vectors(inputs[b]) for b in batches]
        fast.recommend(inputs[batches[0]], seen_of[0])  # compile (or load) the top-K kernel
        fresh, slots = np.arange(args.items, args.items + args.fresh), ScoreConfig().fresh_slots
        tonight = np.load(Path(tmp) / "item_vectors.npy")
        if args.item_tower == "content" and args.fresh:
            added = embed_movies(Path(tmp), catalogue_.iloc[args.items :], args.items)
            tonight = np.vstack([tonight, added]).astype(np.float32)
        wide = FastRetriever(Path(tmp) / "user_tower.onnx", tonight, args.k)
        masked_topk(wide.scores(vectors[0]), seen_of[0], wide.k, None, fresh, slots)  # compile (or load)

        def floor() -> None:
            for v in vectors:
                fast.scores(v)

        def retrieval() -> None:
            for v, s in zip(vectors, seen_of):
                masked_topk(fast.scores(v), s, fast.k)

        def tower() -> None:
            for b in batches:
                fast.user_vectors(inputs[b])

        def tower_reference() -> None:
            assert reference is not None
            for b in batches:
                reference.run(["user_vectors"], {"history": inputs[b], "item_table": fast.table})

        def nightly() -> list:
            return list(fast.recommend_batches(inputs, seen, args.batch_size))

        def in_turn() -> list:
            return [fast.recommend(inputs[b], s) for b, s in zip(batches, seen_of)]

        def previous() -> list:
            return [graph.recommend(inputs[b], s) for b, s in zip(batches, seen_of)]

        def fresh_floor() -> None:
            for v in vectors:
                wide.scores(v)

        def fresh_retrieval() -> None:
            for v, s in zip(vectors, seen_of):  # as FastRetriever.recommend with fresh slots
                masked_topk(wide.scores(v), s, wide.k, None, fresh, slots)

        steps = (
            ("floor", floor),
            ("retrieval", retrieval),
            ("tower", tower),
            *([("tower_reference", tower_reference)] if reference is not None else []),
            ("nightly", nightly),
            ("nightly_in_turn", in_turn),
            ("graph", previous),
            ("fresh_floor", fresh_floor),
            ("fresh_retrieval", fresh_retrieval),
        )
        runs: dict[str, list[float]] = {name: [] for name, _ in steps}
        for _ in range(args.repeats):
            for name, fn in steps:
                runs[name].append(timed(fn))
        tonight_lists = nightly()
        same = all(np.array_equal(a[0], b[0]) for a, b in zip(tonight_lists, previous()))
        n_agree = min(args.agreement_users, args.users)
        lists = np.concatenate([a[0] for a in tonight_lists])[:n_agree]
        agree = agreement(model, inputs[:n_agree], seen[:n_agree], lists, args.k)
        one_process = np.concatenate(
            [masked_topk(fast.scores(v), s, fast.k)[0] for v, s in zip(vectors, seen_of)]
        )
        sharded = shards(args.shards, Path(tmp), vectors, seen, one_process, args)

    pairs = [("retrieval", "floor"), ("nightly", "floor"), ("nightly_in_turn", "floor"),
             ("graph", "nightly"), ("fresh_retrieval", "fresh_floor"), ("tower", "floor"),
             ("tower_reference", "tower")]  # fmt: skip
    ratios = {
        f"{top}_over_{bottom}": summary([t / b for t, b in zip(runs[top], runs[bottom], strict=True)])
        for top, bottom in pairs
        if top in runs
    }
    seconds = {name: summary(values) for name, values in runs.items()}
    flop = 2.0 * args.users * args.items * model.cfg.embedding_dim
    floor_gflops = flop / seconds["floor"]["median"] / 1e9  # the MatMul's rate: quote it with the ratios
    print(
        f"{args.tower} tower, {args.item_tower} item tower, {args.users} users x {args.items} items "
        f"(+ {args.fresh} new, {ScoreConfig().fresh_slots} fresh slots), k={args.k}, batch "
        f"{args.batch_size}, {args.seen} seen, {args.repeats} repeats, {os.cpu_count()} cores"
    )
    print(f"{'stage':34s} {'median s':>9s} {'min':>8s} {'max':>8s} {'users/s':>10s}")
    for name, s in seconds.items():
        print(
            f"{name:34s} {s['median']:9.3f} {s['min']:8.3f} {s['max']:8.3f} {args.users / s['median']:10.0f}"
        )
    for name, r in ratios.items():
        print(f"{name:34s} {r['median']:9.3f} {r['min']:8.3f} {r['max']:8.3f}")
    print(f"floor: {seconds['floor']['median']:.2f} s, {floor_gflops:.0f} GFLOP/s ({cpu_model() or 'cpu'})")
    print(f"nightly lists equal the end-to-end graph's: {same}")
    print(f"nightly lists against float32 PyTorch: {json.dumps(agree)}")
    print(f"\n{args.shards} shards side by side, 1 thread each (Airflow's mapped scoring tasks)")
    for name, s in sharded["seconds"].items():
        print(
            f"{name:34s} {s['median']:9.3f} {s['min']:8.3f} {s['max']:8.3f} {args.users / s['median']:10.0f}"
        )
    r = sharded["retrieval_over_floor"]
    print(f"{'retrieval_over_floor':34s} {r['median']:9.3f} {r['min']:8.3f} {r['max']:8.3f}")
    print(f"shard lists equal the one-process lists: {sharded['lists_equal_one_process']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "machine": {
                    "cores": os.cpu_count(),
                    "processor": platform.processor() or platform.machine(),
                    "cpu_model": cpu_model(),
                    "cpu_flags": sorted(cpu_flags() & VECTOR_FLAGS),
                    "onnxruntime": onnxruntime.__version__,
                },
                "runs_s": runs,
                "seconds": seconds,
                "ratios": ratios,
                "floor_gflops": floor_gflops,
                "nightly_equals_graph": same,
                "agreement_with_pytorch": agree,
                "shards": sharded,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
