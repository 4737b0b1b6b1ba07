"""Commands of the loop's measurements: evaluate the served lists, and report the nights."""

from __future__ import annotations

import argparse
import math
from datetime import date
from pathlib import Path

from recsys.cli.common import Add, positive_arg, print_json, settings_for
from recsys.errors import ConfigError


def cmd_evaluate(args: argparse.Namespace) -> None:
    from recsys.pipelines import evaluate

    print_json(evaluate.evaluate_served(settings_for(args), args.night))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def cmd_report(args: argparse.Namespace) -> None:
    from recsys.pipelines import evaluate

    settings = settings_for(args)
    rows, png = evaluate.report(settings, args.nights, args.png)
    canary = evaluate.canary_evidence(evaluate.history(settings, args.nights))
    if args.json:
        nights = evaluate.json_safe(rows.to_dict(orient="records"))  # NaN (nothing measured): null
        print_json({"nights": nights, "canary_evidence": canary, "png": str(png) if png else None})
        return
    if rows.empty:
        print(
            "no night evaluated yet: the nightly run evaluates the served lists once events came after them"
        )
        return
    header = [c.replace("_at_", "@") for c in rows.columns]
    cells = [[_cell(v) for v in row] for row in rows.itertuples(index=False)]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    for line in [header, *cells]:
        print("  ".join(text.rjust(width) for text, width in zip(line, widths)))
    for night in canary:
        print(_evidence_line(night))
    print(f"plot: {png}")


def _evidence_line(row: dict) -> str:
    """One canary night's evidence: HitRate@10's difference from the champion with its interval."""
    diff, low, high = (row.get(f"hit_rate_at_10_diff{s}") for s in ("", "_low", "_high"))
    if diff is None:
        measured = "HitRate@10 difference not measured yet (no user with new positives in an arm)"
    else:
        detectable = _cell(row.get("hit_rate_at_10_detectable") or float("nan"))
        measured = (
            f"HitRate@10 {diff:+.4f} [95% {low:+.4f}, {high:+.4f}] against champion "
            f"{row['champion_version']}, detectable {detectable}"
        )
    return (
        f"canary {row['model_version']} on {row['night']}: {measured}; over {int(row['evidence_nights'])} "
        f"night(s), {int(row['evidence_users_canary'])} canary and {int(row['evidence_users_champion'])} "
        "champion users"
    )


def register(add: Add) -> None:
    """Add this module's sub-commands."""
    p = add(
        "evaluate",
        cmd_evaluate,
        "measure the lists served now against the positives that came in since they were built "
        "(the nightly run's first task)",
    )
    p.add_argument("--night", help="the night's date for the table (default: today, UTC)")
    p = add("report", cmd_report, "print the recent nights' online metrics and write their plot (PNG)")
    p.add_argument("--nights", type=positive_arg, default=14, help="how many recent nights (default 14)")
    p.add_argument(
        "--png", type=Path, help="where to write the plot (default $RECSYS_HOME/online/report.png)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    register_replay(add)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def cmd_replay(args: argparse.Namespace) -> None:
    from recsys.pipelines import replay
    from recsys.pipelines.canary_scenario import Scenario

    scenario = None
    if args.canary:
        scenario = Scenario(args.canary, args.canary_night, args.canary_share, tuple(args.canary_setting))
    elif args.canary_setting:
        raise ConfigError("--canary-setting needs --canary worse|better")
    report = replay.replay(
        settings_for(args),
        args.source,
        args.start,
        args.nights,
        args.step_days,
        args.retrain_every_days,
        args.out,
        scenario,
    )
    shown = {"arms": report["arms"], "json": report["json"], "png": report["png"]}
    if "canary" in report:
        shown["canary"] = {k: v for k, v in report["canary"].items() if k != "nights"}
    print_json(shown)


def register_replay(add: Add) -> None:
    p = add(
        "replay",
        cmd_replay,
        "play a MovieLens release night by night through the pipelines (ingest, retrain when due, "
        "incremental scoring, publish, evaluation), beside frozen and most-popular lists",
    )
    p.add_argument("--source", type=Path, required=True, help="a MovieLens release folder")
    p.add_argument("--start", type=_day, required=True, help="first day of events (YYYY-MM-DD)")
    p.add_argument("--nights", type=positive_arg, required=True, help="how many steps to play")
    p.add_argument("--step-days", type=positive_arg, default=1, help="days per step (default 1)")
    p.add_argument(
        "--retrain-every-days",
        type=positive_arg,
        default=7,
        help="retrain when this many days passed (default 7)",
    )
    p.add_argument("--out", type=Path, help="where replay.json, replay.png and its own home go")
    p.add_argument(
        "--canary",
        choices=("worse", "better"),
        help="a canary scenario: on --canary-night, train a challenger (worse: the id tower; better: "
        "the default model on that night's data), start it as the canary and let the nightly judge "
        "promote or roll it back (settings promotion.*)",
    )
    p.add_argument("--canary-night", type=positive_arg, default=1, help="the scenario's night (default 1)")
    p.add_argument(
        "--canary-share",
        type=float,
        default=0.5,
        help="the canary's share of users, in (0, 0.5] (default 0.5)",
    )
    p.add_argument(
        "--canary-setting",
        action="append",
        default=[],
        metavar="section.key=value",
        help="a setting of the challenger's training only (repeatable)",
    )
