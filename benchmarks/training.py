"""Speed of the two-tower's training step against today's reference step and a matmul floor, in one run.

Two shapes: ``sample`` (the bundled ml-latest-small, full softmax over 1,956 movies plus 1,024
untrained ones) and ``ml20m`` (`recsys synth --preset ml-20m`, prepared in process, sampled
softmax over 15,609 movies; the release and its preparation are cached under --cache). Per shape
and variant, each repeat runs ``--steps`` training steps of real batches (after ``--warmup``) and
times each step's phases: forward (user tower, item tower and loss), backward, optimiser. Figures
are medians over repeats; the default's speed-up is taken per repeat against the reference measured
just before it.

Variants:
- ``reference``: the step before issue 22, kept here as the reference implementation: attention
  written out with torch's Bernoulli dropout, the content item tower run on every column, the
  logits [Q, C] materialised in float32 (matmul, /temperature, -logQ, masks, log-softmax).
- ``default``: the step as it trains now (recsys.models.two_tower: encoder, loss), in the
  precision ``train.precision`` resolves to on this machine.
- ``batch256``: the default with ``train.batch_size=256``.

Useful FLOPs count the matrix products a step needs (forward x 3 for forward and backward): the
encoder's projections, attention over all H keys and feed-forward over every slot, the item tower's
MLP per column, and the loss's logits and its two gradient products. The floor is a dense torch
matmul of the loss's width (queries x 64 @ 64 x columns) in float32 and in bfloat16, measured in
the same run. A validation pass (every validation user ranked against the catalogue) is timed once
per shape, and on a sample of ``--valid-users`` users (``train.valid_users``).

    .venv/bin/python benchmarks/training.py                       # both shapes, 3 repeats
    .venv/bin/python benchmarks/training.py --shapes sample --repeats 5
Prints a table and writes benchmarks/results/training.json (--out).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recsys.config import Settings, load_settings
from recsys.data.prepared import (
    Prepared,
    load_movies,
    load_prepared,
    load_ratings,
    load_tags,
    prepare,
    save_prepared,
    with_tags,
)
from recsys.data.synth.params import params_for
from recsys.data.synth.release import synthesize
from recsys.errors import ConfigError
from recsys.models.two_tower import training
from recsys.models.two_tower.evaluation import Evaluation
from recsys.models.two_tower.hardware import Hardware, cpu_model
from recsys.models.two_tower.model import CONTENT, TwoTower
from recsys.models.two_tower.sequences import window_examples

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"reference": [], "default": [], "batch256": ["train.batch_size=256"]}


# ---- today's step before issue 22, the reference -------------------------------------------------


def _reference_rows(self, item_idx: Tensor) -> Tensor:  # noqa: ANN001
    if not self.reads_content:
        return self.item_emb(item_idx)
    flat = item_idx.reshape(-1)
    at = flat.clamp(max=self.n_items - 1)
    content = self.content_vectors(*(getattr(self, f"content_{name}")[at] for name in CONTENT))
    out = (content + self._id_part(flat)) * (flat != self.n_items).unsqueeze(-1).to(content.dtype)
    return out.view(*item_idx.shape, -1)


def as_reference(model: TwoTower) -> TwoTower:
    """``model`` running the pre-issue-22 code: torch's dropout (the blocks' attention is written
    out as it was), the content encoder on every column."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child).__name__ == "Dropout" and not isinstance(child, nn.Dropout):
                setattr(module, name, nn.Dropout(child.p))
    model._rows = types.MethodType(_reference_rows, model)  # type: ignore[method-assign]
    return model


def reference_loss(model: TwoTower, queries: Tensor, targets: Tensor, full: bool,
                   sampled: Tensor | None, sampled_log_q: Tensor | None) -> Tensor:  # fmt: skip
    """full_softmax_loss / sampled_softmax_loss before issue 22 (no teacher, no hard negatives)."""
    t = model.cfg.temperature
    if full:
        logits = queries @ model.item_vectors().T / t
        tail = model.negative_vectors(model.cfg.tail_negatives)
        if tail is not None:
            logits = torch.cat([logits, queries @ tail[0].T / t + tail[1]], dim=1)
        return F.cross_entropy(logits, targets)
    columns = targets if sampled is None else torch.cat([targets, sampled])
    logits = queries @ model.item_vectors(columns).T / t
    if model.cfg.logq_correction:
        log_q = model.item_log_prob[targets] + math.log(len(targets))
        if sampled is not None and sampled_log_q is not None:
            log_q = torch.cat([log_q, sampled_log_q + math.log(len(sampled))])
        logits = logits - log_q
    own = torch.zeros_like(logits, dtype=torch.bool)
    own[:, : len(targets)] = torch.eye(len(targets), dtype=torch.bool)
    logits = logits.masked_fill((targets.unsqueeze(1) == columns.unsqueeze(0)) & ~own, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(targets)))


# ---- shapes --------------------------------------------------------------------------------------


def sample_shape(cache: Path) -> Prepared:
    """The bundled ml-latest-small with its tags, prepared by the protocol (as benchmarks/quality.py)."""
    settings = load_settings()
    folder = settings.paths.datasets / "ml-latest-small"
    movies = with_tags(load_movies(folder / "movies.csv"), load_tags(folder / "tags.csv"))
    return prepare(load_ratings(folder / "ratings.csv"), movies, settings.data)


def ml20m_shape(cache: Path) -> Prepared:
    """The generator's ML-20M release, prepared by the protocol, cached under ``cache``."""
    folder, release = cache / "ml20m-prepared", cache / "ml20m"
    if (folder / "meta.json").exists():
        return load_prepared(folder)
    if not (release / "ratings.csv").exists():  # what `recsys synth --preset ml-20m --seed 0` writes
        synthesize(params_for("ml-20m", seed=0), release, force=True)
    movies = with_tags(load_movies(release / "movies.csv"), load_tags(release / "tags.csv"))
    prepared = prepare(load_ratings(release / "ratings.csv"), movies, load_settings().data)
    save_prepared(prepared, folder)
    return prepared


SHAPES = {"sample": sample_shape, "ml20m": ml20m_shape}


# ---- measurement ---------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Run:
    """One variant's model, examples and optimiser on one shape, stepped and timed phase by phase."""

    def __init__(self, prepared: Prepared, settings: Settings, reference: bool) -> None:
        self.settings, self.reference = settings, reference
        self.hardware = Hardware.resolve(settings.train)
        if reference:
            self.hardware = Hardware(torch.device("cpu"), torch.float32)
        self.gen = training.set_seed(settings.train.seed)
        pairs = prepared.split("train")[["user_idx", "item_idx"]].to_numpy(dtype=np.int64)
        model = training.new_model(prepared, settings, prepared.tail)
        self.model = (as_reference(model) if reference else model).to(self.hardware.device).train()
        self.ex = window_examples(pairs, prepared.n_items, settings.model.history_length)
        self.ctx = training._loss_context(prepared, settings, self.model, self.ex, self.gen, None)
        self.ctx.hardware = self.hardware
        cfg = settings.train
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.learning_rate)
        self.order = torch.randperm(len(self.ex.inputs), generator=self.gen)
        self.at = 0

    def _batch(self) -> Tensor:
        size = self.settings.train.batch_size
        if self.at + size > len(self.order):
            self.at = 0
        self.at += size
        return self.order[self.at - size : self.at]

    def _loss(self, idx: Tensor) -> Tensor:
        if not self.reference:
            return training._step_loss(self.model, self.ex, idx, self.settings, self.ctx, self.gen)
        rows, targets = self.ex.inputs[idx], self.ex.targets[idx]
        mask = targets != self.model.n_items
        queries, tgt = self.model.sequence_vectors(rows)[mask], targets[mask]
        sampled = log_q = None
        if not self.ctx.full and self.ctx.sampler is not None:
            sampled, log_q = self.ctx.sampler.draw(self.settings.model.num_sampled_negatives)
        return reference_loss(self.model, queries, tgt, self.ctx.full, sampled, log_q)

    def steps(self, n: int) -> dict[str, float]:
        """n steps: seconds per phase summed, and the predicted positions and queries x columns."""
        out = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0, "positions": 0}
        device = self.hardware.device
        for _ in range(n):
            idx = self._batch()
            sync(device)
            t0 = time.perf_counter()
            loss = self._loss(idx)
            sync(device)
            t1 = time.perf_counter()
            self.optimizer.zero_grad()
            loss.backward()
            sync(device)
            t2 = time.perf_counter()
            self.optimizer.step()
            sync(device)
            t3 = time.perf_counter()
            out["forward"] += t1 - t0
            out["backward"] += t2 - t1
            out["optimizer"] += t3 - t2
            out["positions"] += int(self.ex.n_targets[idx].sum())
        return out


def step_flops(run: Run, n_steps: int) -> tuple[float, int, int]:
    """Useful FLOPs of a typical step (the products it needs, forward x 3), averaged over
    ``n_steps`` batches, and the loss's mean queries and columns."""
    cfg, model = run.settings.model, run.model
    d, h = cfg.embedding_dim, cfg.history_length
    per_position = cfg.num_blocks * (12 * d * d + 4 * h * d)
    total, queries, columns = 0.0, 0, 0
    gen = torch.Generator().manual_seed(0)
    for _ in range(n_steps):
        idx = run.order[torch.randint(0, len(run.order), (run.settings.train.batch_size,), generator=gen)]
        targets = run.ex.targets[idx]
        q = int((targets != model.n_items).sum())
        if run.ctx.full:
            c = model.n_items + min(model.n_negatives, cfg.tail_negatives or model.n_negatives)
        else:
            c = int(torch.unique(targets[targets != model.n_items]).numel()) + cfg.num_sampled_negatives
        total += 3 * (q * per_position + c * 4 * d * d + 2 * q * c * d)
        queries, columns = queries + q, columns + c
    return total / n_steps, queries // n_steps, columns // n_steps


def matmul_floor(q: int, c: int, d: int, device: torch.device, repeats: int = 20) -> dict[str, float]:
    """GFLOP/s of a dense [q, d] @ [c, d].T torch matmul, float32 and bfloat16 (median of repeats)."""
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(q, d, device=device, dtype=dtype), torch.randn(c, d, device=device, dtype=dtype)
        times = []
        for i in range(repeats + 3):
            sync(device)
            t0 = time.perf_counter()
            a @ b.T  # the loss's layout
            sync(device)
            if i >= 3:
                times.append(time.perf_counter() - t0)
        out[str(dtype).removeprefix("torch.")] = 2 * q * c * d / statistics.median(times) / 1e9
    return out


def validation_cost(prepared: Prepared, run: Run, sample: int) -> dict[str, float]:
    """Seconds of one validation pass over every user, and over a ``sample`` of them."""
    run.model.eval()
    out = {"users": len(Evaluation(run.model, prepared, "valid").heldout)}
    for name, users in (("all_s", 0), ("sample_s", sample)):
        if users and users >= out["users"]:
            continue
        judge = Evaluation(run.model, prepared, "valid", run.settings.train.eval_batch_size, users)
        t0 = time.perf_counter()
        judge.run()
        out[name] = time.perf_counter() - t0
    out["sample_users"] = min(sample, out["users"])
    run.model.train()
    return out


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure_shape(name: str, prepared: Prepared, args: argparse.Namespace) -> dict:
    base = ["train.progress_bar=false", *args.set]
    runs = {
        v: Run(prepared, load_settings([*base, *extra]), v == "reference") for v, extra in VARIANTS.items()
    }
    for run in runs.values():
        run.steps(args.warmup)
    rows: dict[str, list[dict]] = {v: [] for v in runs}
    for _ in range(args.repeats):
        for v, run in runs.items():
            rows[v].append(run.steps(args.steps))
    default = runs["default"]
    flops = {v: step_flops(run, 20) for v, run in runs.items()}
    result: dict = {
        "n_users": prepared.n_users,
        "n_items": prepared.n_items,
        "softmax": "full" if default.ctx.full else "sampled",
        "precision": str(default.hardware.dtype).removeprefix("torch."),
        "steps_per_repeat": args.steps,
        "variants": {},
    }
    for v, reps in rows.items():
        pos_s = [r["positions"] / (r["forward"] + r["backward"] + r["optimizer"]) for r in reps]
        seconds = {
            p: statistics.median(r[p] for r in reps) / args.steps
            for p in ("forward", "backward", "optimizer")
        }
        step_s = sum(seconds.values())
        result["variants"][v] = {
            "batch_size": runs[v].settings.train.batch_size,
            "positions_per_s": summary(pos_s),
            "step_ms": 1000 * step_s,
            "shares": {p: s / step_s for p, s in seconds.items()},
            "useful_gflops": flops[v][0] / step_s / 1e9,
        }
        if v != "reference":
            ratios = [a["positions"] / (a["forward"] + a["backward"] + a["optimizer"])
                      / (b["positions"] / (b["forward"] + b["backward"] + b["optimizer"]))
                      for a, b in zip(reps, rows["reference"], strict=True)]  # fmt: skip
            result["variants"][v]["speedup"] = summary(ratios)
    _, q, c = flops["default"]
    result["floor"] = {
        "queries": q,
        "columns": c,
        "gflops": matmul_floor(q, c, default.settings.model.embedding_dim, default.hardware.device),
    }
    if not args.skip_validation:
        result["validation"] = validation_cost(prepared, default, args.valid_users)
    return result


def print_table(results: dict) -> None:
    print(f"\n{results['machine']['cpu_model']} | {results['machine']['device']}")
    print(f"{'shape':8} {'variant':10} {'batch':>5} {'pos/s':>8} {'x ref':>6} {'step ms':>8} "
          f"{'fwd':>5} {'bwd':>5} {'opt':>5} {'GFLOP/s':>8}")  # fmt: skip
    for shape, res in results["shapes"].items():
        for v, row in res["variants"].items():
            speed = row.get("speedup", {}).get("median", 1.0)
            sh = row["shares"]
            print(f"{shape:8} {v:10} {row['batch_size']:>5} {row['positions_per_s']['median']:>8.0f} "
                  f"{speed:>6.2f} {row['step_ms']:>8.1f} {sh['forward']:>5.0%} {sh['backward']:>5.0%} "
                  f"{sh['optimizer']:>5.0%} {row['useful_gflops']:>8.1f}")  # fmt: skip
        floor = res["floor"]["gflops"]
        size = f"{res['floor']['queries']} x 64 @ 64 x {res['floor']['columns']}"
        print(f"{shape:8} floor: matmul {size}: float32 {floor['float32']:.0f} GFLOP/s, "
              f"bfloat16 {floor['bfloat16']:.0f} GFLOP/s")  # fmt: skip
        if "validation" in res:
            val = res["validation"]
            sampled = f", {val['sample_users']} users {val['sample_s']:.1f} s" if "sample_s" in val else ""
            print(f"{shape:8} validation pass: {val['users']} users {val['all_s']:.1f} s{sampled}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat and variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--valid-users", type=int, default=10_000, help="the sampled validation pass")
    parser.add_argument("--skip-validation", action="store_true")
    parser.add_argument("--set", nargs="*", default=[], help="settings for every variant (train.device=cuda)")
    parser.add_argument("--cache", type=Path, default=load_settings().paths.home / "benchmarks")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "training.json")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    try:
        hardware = Hardware.resolve(load_settings(args.set).train)
    except ConfigError as exc:  # a bad --set, or train.device=cuda without a GPU
        parser.error(str(exc))
    results = {
        "command": "benchmarks/training.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpu_model": cpu_model(),
            "cores": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "device": hardware.describe(),
        },
        "shapes": {},
    }
    args.cache.mkdir(parents=True, exist_ok=True)
    for shape in args.shapes:
        results["shapes"][shape] = measure_shape(shape, SHAPES[shape](args.cache), args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
