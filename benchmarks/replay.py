"""What the nightly loop is worth: `recsys replay` on a release played night by night, three arms.

The arms (recsys.pipelines.replay): ``fresh`` (the lists the loop serves, re-scored every night from
the day's events, retrained every --retrain-every-days), ``frozen`` (the lists as of the last retrain,
never refreshed) and ``mostpop`` (the most popular movies as of that night, seen ones removed), all
measured on the same users: those with a new positive in the step who were known the night before.
Each arm's mean over every (night, user) pair comes with a 95% bootstrap interval over those pairs,
and the gain of ``fresh`` over each other arm with a paired interval.

    .venv/bin/python benchmarks/replay.py --dataset ml-latest-small   # last two years, monthly steps
    .venv/bin/python benchmarks/replay.py --dataset synth-small        # ~1M ratings, 60 daily nights

Prints the table and writes benchmarks/results/replay-<dataset>.json and .png (the README's table
and plot). Everything runs in --workdir (default: a temp dir) with its own home, Redis and MLflow.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
# dataset -> (nights, step days, retrain every days): the two runs the README reports
DEFAULTS = {"ml-latest-small": (24, 30, 90), "synth-small": (60, 1, 7)}
METRICS = ("hit_rate_at_10", "recall_at_10", "recall_at_100", "ndcg_at_10")


def source_folder(dataset: str, workdir: Path) -> tuple[Path, str]:
    """The release folder to replay and how it was made."""
    if dataset == "ml-latest-small":
        return ROOT / "data" / "ml-latest-small", "the bundled ml-latest-small sample"
    folder = workdir / "synth"
    command = [str(Path(sys.executable).parent / "recsys"), "synth", "--preset", "small", "--seed", "0"]
    subprocess.run([*command, "--out", str(folder)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return folder, "recsys synth --preset small --seed 0"


def cell(arm: dict, metric: str) -> str:
    return f"{arm[metric]:.4f} [{arm[metric + '_low']:.4f}, {arm[metric + '_high']:.4f}]"


def print_table(arms: dict) -> None:
    print(f"{'arm':8s} {'nights':>6s} {'users':>7s}  " + "  ".join(f"{m:>26s}" for m in METRICS))
    for name, arm in arms.items():
        print(
            f"{name:8s} {arm['nights']:6d} {arm['users']:7d}  "
            + "  ".join(f"{cell(arm, m):>26s}" for m in METRICS)
        )
    for name, arm in arms.items():
        if name == "fresh":
            continue
        gains = [f"{m} {cell(arm, f'fresh_minus_{name}_{m}')}" for m in METRICS]
        print(f"fresh - {name}: " + "; ".join(gains))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DEFAULTS), default="ml-latest-small")
    parser.add_argument("--nights", type=int, help="steps to play (default: per dataset)")
    parser.add_argument("--step-days", type=int, help="days per step (default: per dataset)")
    parser.add_argument("--retrain-every-days", type=int, help="retrain cadence (default: per dataset)")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temp dir)")
    parser.add_argument("--out", type=Path, help="JSON path (default: results/replay-<dataset>.json)")
    parser.add_argument(
        "overrides", nargs="*", help="settings key=value for the replay (e.g. train.max_epochs=5)"
    )
    args = parser.parse_args()
    nights, step_days, every = DEFAULTS[args.dataset]
    nights, step_days = args.nights or nights, args.step_days or step_days
    every = args.retrain_every_days or every
    out = args.out or RESULTS / f"replay-{args.dataset}.json"
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="recsys-replay-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["RECSYS_HOME"] = str(workdir / "home")  # settings default; the replay makes its own below

    import logging

    from recsys.config import load_settings
    from recsys.data import stream
    from recsys.pipelines import replay

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    source, made = source_folder(args.dataset, workdir)
    ratings, _ = stream.read_release(source)
    start = stream.last_day(ratings) - timedelta(days=nights * step_days - 1)
    started = time.perf_counter()
    report = replay.replay(
        load_settings(args.overrides), source, start, nights, step_days, every, workdir / "replay"
    )
    wall = time.perf_counter() - started
    result = {
        "command": " ".join(["benchmarks/replay.py", *sys.argv[1:]]),
        "dataset": made,
        "args": {**report["args"], "source": args.dataset, "overrides": args.overrides},
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
        "wall_s": round(wall, 1),
        "arms": report["arms"],
        "rows": report["rows"],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    shutil.copyfile(report["png"], out.with_suffix(".png"))
    print_table(report["arms"])
    print(f"{nights} nights in {wall:.0f} s; wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
