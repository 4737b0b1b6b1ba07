"""What the nightly loop is worth: `recsys replay` on a release played night by night, three arms.

The arms (recsys.pipelines.replay): ``fresh`` (the lists the loop serves, re-scored every night from
the day's events, retrained every --retrain-every-days), ``frozen`` (the lists as of the last retrain,
never refreshed) and ``mostpop`` (the most popular movies as of that night, seen ones removed), all
measured on the same users: those with a new positive in the step who were known the night before.
Each arm's mean over every (night, user) pair comes with a 95% bootstrap interval over those pairs,
and the gain of ``fresh`` over each other arm with a paired interval.

    .venv/bin/python benchmarks/replay.py --dataset ml-latest-small   # last two years, monthly steps
    .venv/bin/python benchmarks/replay.py --dataset synth-small        # ~1M ratings, 60 daily nights

A canary scenario (recsys.pipelines.canary_scenario): --canary worse|better starts a challenger as
the canary on --canary-night, and the nightly judge promotes or rolls it back (settings
promotion.*, given as overrides); the JSON then holds the scenario, each night's evidence and the
decision, and is written to results/replay-<dataset>-canary-<kind>.json (the README's two runs;
``canary_row`` renders their table rows):

    .venv/bin/python benchmarks/replay.py --dataset synth-small --start 2000-06-01 --nights 9 \
        --step-days 14 --retrain-every-days 365 --canary worse --canary-night 2 train.threads=1
    .venv/bin/python benchmarks/replay.py ... --canary better model.user_tower=id  # id-tower champion

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
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
# dataset -> (nights, step days, retrain every days): the two runs the README reports
DEFAULTS = {"ml-latest-small": (24, 30, 90), "synth-small": (60, 1, 7), "synth-ml20m": (6, 7, 365)}
METRICS = ("hit_rate_at_10", "recall_at_10", "recall_at_100", "ndcg_at_10")


def source_folder(dataset: str, workdir: Path) -> tuple[Path, str]:
    """The release folder to replay and how it was made."""
    if dataset == "ml-latest-small":
        return ROOT / "data" / "ml-latest-small", "the bundled ml-latest-small sample"
    preset = {"synth-small": "small", "synth-ml20m": "ml-20m"}[dataset]
    folder = workdir / f"synth-{preset}"
    command = [str(Path(sys.executable).parent / "recsys"), "synth", "--preset", preset, "--seed", "0"]
    if not (folder / "ratings.csv").is_file():
        subprocess.run([*command, "--out", str(folder)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return folder, f"recsys synth --preset {preset} --seed 0"


def print_canary(canary: dict) -> None:
    """Each night's judgement of the canary, then the decision and the evidence it rests on."""
    started = canary["started"]
    print(
        f"canary: version {started['version']} ({canary['scenario']['kind']}) from night {started['night']}"
    )
    offline = [
        f"{who} {started[key]['ndcg_at_10']:.4f}"
        for who, key in (("canary", "valid"), ("champion", "champion_valid"), ("MostPop", "mostpop_valid"))
        if started.get(key)
    ]
    print("  validation NDCG@10 on the night's split: " + ", ".join(offline))
    for night in canary["nights"]:
        print(f"  night {night['night']:3d} {night['day']}: {night['action']:9s} {night['reason']}")
    decision = canary.get("decision")
    if decision:
        after = canary["nights_to_decision"]
        print(f"decided on night {decision['night']} ({after} after the start): {decision['action']}")
    else:
        print("no decision within the nights played")


def _interval(evidence: dict, metric: str) -> str:
    low, high = evidence[f"{metric}_diff_low"], evidence[f"{metric}_diff_high"]
    return f"{evidence[f'{metric}_diff']:+.3f} [{low:+.3f}, {high:+.3f}]"


def canary_row(report: dict, label: str) -> str:
    """The README's row for one canary scenario run (tests/unit/test_readme.py holds the two equal):
    the offline comparison at the start, then the decision and the evidence it rests on."""
    canary = report["canary"]
    started, decision = canary["started"], canary["decision"]
    evidence = decision["evidence"]
    offline = f"{started['valid']['ndcg_at_10']:.4f} / {started['champion_valid']['ndcg_at_10']:.4f}"
    users = f"{evidence['evidence_users_canary']:.0f} / {evidence['evidence_users_champion']:.0f}"
    cells = [
        label,
        offline,
        decision["action"].replace("_", " "),
        str(canary["nights_to_decision"]),
        _interval(evidence, "hit_rate_at_10"),
        _interval(evidence, "recall_at_10"),
        users,
        f"{evidence['hit_rate_at_10_detectable']:.3f}",
    ]
    return "| " + " | ".join(cells) + " |"


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
        "--start", help="first day of events, YYYY-MM-DD (default: the last nights of the data)"
    )
    parser.add_argument("--canary", choices=("worse", "better"), help="a canary scenario (see above)")
    parser.add_argument("--canary-night", type=int, default=1, help="the scenario's night (default 1)")
    parser.add_argument("--canary-share", type=float, default=0.5, help="the canary's share (default 0.5)")
    parser.add_argument("--canary-setting", action="append", default=[], help="the challenger's own setting")
    parser.add_argument(
        "overrides", nargs="*", help="settings key=value for the replay (e.g. train.max_epochs=5)"
    )
    args = parser.parse_args()
    nights, step_days, every = DEFAULTS[args.dataset]
    nights, step_days = args.nights or nights, args.step_days or step_days
    every = args.retrain_every_days or every
    suffix = f"-canary-{args.canary}" if args.canary else ""
    out = args.out or RESULTS / f"replay-{args.dataset}{suffix}.json"
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="recsys-replay-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["RECSYS_HOME"] = str(workdir / "home")  # settings default; the replay makes its own below

    import logging

    from recsys.config import load_settings
    from recsys.data import stream
    from recsys.pipelines import replay
    from recsys.pipelines.canary_scenario import Scenario

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    source, made = source_folder(args.dataset, workdir)
    ratings, _ = stream.read_release(source)
    start = stream.last_day(ratings) - timedelta(days=nights * step_days - 1)
    if args.start:
        start = date.fromisoformat(args.start)
    scenario = None
    if args.canary:
        scenario = Scenario(args.canary, args.canary_night, args.canary_share, tuple(args.canary_setting))
    started = time.perf_counter()
    report = replay.replay(
        load_settings(args.overrides), source, start, nights, step_days, every, workdir / "replay", scenario
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
        **({"canary": report["canary"]} if "canary" in report else {}),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    shutil.copyfile(report["png"], out.with_suffix(".png"))
    print_table(report["arms"])
    if "canary" in report:
        print_canary(report["canary"])
    print(f"{nights} nights in {wall:.0f} s; wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
