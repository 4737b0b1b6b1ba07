"""``recsys replay``: a MovieLens release played night by night through the real pipelines, with
two counterfactual arms beside the lists the loop serves.

The release is split at a start day (recsys.data.stream): the ratings before it are the initial
release, each later step of ``step_days`` days is an event file. Night 0 ingests the release,
prepares it, trains, promotes and publishes. Each later night delivers the next step into the event
folder and runs what production runs: ``ingest --events``, ``evaluate_served``, a retrain when
``retrain_every_days`` have passed since the last one (prepare everything, train, gate), the
(incremental) scoring, validation and publish.

Every night, over the same users (those with a new positive in the step who were known the night
before), three sets of lists are measured with recsys.evaluation.online:

- ``fresh``: the lists served (refreshed every night from the day's events);
- ``frozen``: the lists as of the last retrain, never refreshed;
- ``mostpop``: the most popular movies as of that night (positives counted over the snapshot the
  night before), the user's rated movies removed.

An arm without a list for a user misses all of that user's positives. Each row of ``replay.json``
is one night and one arm: the night's first day, the arm, the users evaluated, every metric with a
95% bootstrap interval over users, and (fresh) the users re-scored. Its ``arms`` pool every night:
each metric's mean over all (night, user) pairs with a 95% bootstrap interval over them, and the
paired gain of ``fresh`` over each other arm with its interval. ``per_user.parquet`` holds the
values they are computed from. ``replay.png`` plots them; one
MLflow run in the ``online`` experiment carries both.

With a canary scenario (recsys.pipelines.canary_scenario), a challenger is trained on a chosen
night and started as the canary; every night the evaluation measures each arm and pools the
canary's evidence, and the nightly judge promotes or rolls it back (settings ``promotion``). The
report's ``canary`` holds the scenario, each night's evidence and judgement, and the decision with
the evidence it rested on. Regular retrains are skipped in a scenario run: one challenger is judged.

Everything runs in ``<out>/home`` (its own RECSYS_HOME, its own embedded Redis on a free port), so
the replay never touches the served system.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys import home
from recsys.config import Settings
from recsys.data import eventlog, stream
from recsys.errors import ConfigError
from recsys.evaluation import online
from recsys.files import read_parquet, write_text
from recsys.pipelines import canary_scenario, evaluate, ingest, retrain, score_nightly
from recsys.pipelines.canary_scenario import Scenario

log = logging.getLogger(__name__)
ARMS = ("fresh", "frozen", "mostpop")
K = 100  # list length of the mostpop arm (the served lists hold the model version's K)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def replay_settings(settings: Settings, out: Path, release: Path) -> Settings:
    """``settings`` pointed at ``out/home`` and the initial release, with an embedded Redis of its
    own (the caller's Redis and MLflow settings are left out: the replay is self-contained)."""
    tree = settings.model_dump()
    tree["paths"]["home"] = out / "home"
    tree["data"]["source"] = release
    tree["store"].update(connection_string=None, port=_free_port())
    tree["mlflow"]["tracking_uri"] = None
    tree["dvc"]["remote_url"] = None
    tree["events"]["source"] = None
    return Settings.model_validate(tree)


def _night_zero(settings: Settings) -> Path:
    """Ingest, prepare, train, promote, score and publish the initial release; its lists."""
    snapshot = ingest.ingest(settings, validate=True)
    prepared = ingest.prepare(settings, snapshot["raw_dir"], snapshot["data_version"])
    _train(settings, prepared, force=True)
    return _night(settings)["recommendations"]


def _train(settings: Settings, prepared: dict, force: bool = False) -> dict:
    trained = retrain.train(settings, prepared["prepared_dir"], prepared["data_version"])
    comparison = retrain.compare(settings, trained["version"], prepared["prepared_dir"])
    return retrain.promote(settings, comparison, force=force)


def _night(settings: Settings) -> dict:
    scored = score_nightly.score(settings)
    score_nightly.validate_recommendations(settings, scored["recommendations"])
    score_nightly.publish(settings, scored["recommendations"])
    return scored


def _lists(path: Path) -> dict[int, np.ndarray]:
    frame = read_parquet(path, ["user_id", "item_ids"])
    return dict(zip(frame["user_id"].tolist(), frame["item_ids"]))


def mostpop_lists(
    ratings: pd.DataFrame, users: list[int], threshold: float, k: int = K
) -> dict[int, np.ndarray]:
    """Each user's ``k`` most popular movies (positives counted in ``ratings``) they have not rated."""
    counts = ratings.loc[ratings["rating"] >= threshold, "movie_id"].value_counts(sort=False)
    ranked = counts.sort_index().sort_values(ascending=False, kind="stable").index.to_numpy()
    rated = ratings[ratings["user_id"].isin(users)].groupby("user_id")["movie_id"].agg(set)
    out = {}
    for user in users:
        seen = rated.get(user, set())
        top = [m for m in ranked[: k + len(seen)] if m not in seen][:k]
        out[user] = np.asarray(top, dtype=np.int64)
    return out


def measure_arms(
    settings: Settings, since: int, until: int, arms: dict[str, Path | None], previous: dict[str, dict]
) -> tuple[list[dict], pd.DataFrame]:
    """One night: each arm's lists (a file, or None for mostpop) on the positives of nights
    ``since``+1..``until``, over the users with one who were known by night ``since``.

    Returns the night's rows (one per arm) and the per-user metrics (column ``arm`` added), which
    the summary pools over nights.
    """
    raw = home.raw_dir(settings)
    positives, _ = evaluate.new_positives(settings, since, until)
    before = eventlog.current_ratings(raw, until=since)
    known = set(before["user_id"].unique().tolist())
    positives = {u: p for u, p in positives.items() if u in known}
    served = Path(arms["fresh"])  # type: ignore[arg-type]
    catalogue = read_parquet(served.parent / "catalogue.parquet", ["movie_id", "train_count"])
    rows, users = [], []
    for arm, path in arms.items():
        found = (
            _lists(path)
            if path is not None
            else mostpop_lists(before, sorted(positives), settings.data.rating_threshold)
        )
        lists = {u: found.get(u, np.empty(0, dtype=np.int64)) for u in positives}
        metrics, _ = evaluate.measure(lists, positives, catalogue, previous.get(arm), with_intervals=True)
        metrics["coverage_at_10"] = online.coverage(found, len(catalogue))  # over all of the arm's lists
        rows.append(evaluate.json_safe({"arm": arm, **metrics}))
        users.append(online.per_user(lists, positives).assign(arm=arm))
        previous[arm] = found
    return rows, pd.concat(users, ignore_index=True)


def replay(
    settings: Settings,
    source: Path,
    start: date,
    nights: int,
    step_days: int = 1,
    retrain_every_days: int = 7,
    out: Path | None = None,
    scenario: Scenario | None = None,
) -> dict:
    """Play ``nights`` steps of ``source`` from ``start`` through the pipelines (module docstring);
    returns the report written to ``out/replay.json``."""
    from recsys.ops import redis_server

    if scenario is not None and scenario.night > nights:
        raise ConfigError(f"the canary scenario starts on night {scenario.night} of only {nights} played")
    out = Path(out or settings.paths.home / "replay").resolve()
    played = stream.split(source, start, nights, step_days, out / "stream")
    here = replay_settings(settings, out, played.release)
    if scenario is not None:
        here = canary_scenario.replay_settings(here, scenario)
    rows: list[dict] = []
    users: list[pd.DataFrame] = []
    with redis_server.running(here):
        state: dict[str, Any] = {
            "frozen": Path(_night_zero(here)),
            "last_retrain": start,
            "previous": {},
            "scenario": scenario,
        }
        state["canary"] = {"scenario": scenario.as_dict(), "nights": []} if scenario else None
        for number, step in enumerate(played.steps, 1):
            night_rows, night_users = _play_night(here, number, step, retrain_every_days, state)
            rows += night_rows
            users.append(night_users.assign(night=number))
    args = {
        "source": str(source),
        "start": start.isoformat(),
        "nights": nights,
        "step_days": step_days,
        "retrain_every_days": retrain_every_days,
    }
    per_user = pd.concat(users, ignore_index=True)
    per_user.to_parquet(out / "per_user.parquet", index=False)
    return _report(here, out, rows, per_user, args, state["canary"])


def _play_night(
    here: Settings, number: int, step: tuple[date, Path, Path | None], every: int, state: dict
) -> tuple[list[dict], pd.DataFrame]:
    """Deliver one step, take it in, measure the three arms, retrain when due, score and publish."""
    day, ratings_file, movies_file = step
    inbox = here.paths.home / "events"
    inbox.mkdir(parents=True, exist_ok=True)
    for path in (ratings_file, movies_file):
        if path is not None:
            shutil.copyfile(path, inbox / path.name)
    raw = home.raw_dir(here)
    since = eventlog.last_seq(raw)
    taken = ingest.ingest_events(here)
    evaluated = evaluate.evaluate_served(here, day.isoformat())
    arms = {"fresh": Path(_served(here)), "frozen": state["frozen"], "mostpop": None}
    measured, users = measure_arms(here, since, eventlog.last_seq(raw), arms, state["previous"])
    if state["canary"] is not None:
        _canary_night(here, number, day, evaluated, taken, state)
    due = (day - state["last_retrain"]).days >= every and state["scenario"] is None
    if due:
        _train(here, ingest.prepare(here, str(raw), taken["data_version"]))
        state["last_retrain"] = day
    scored = _night(here)
    if due:
        state["frozen"] = here.paths.home / "frozen.parquet"
        shutil.copyfile(scored["recommendations"], state["frozen"])
    log.info("replay night %d (%s): %s", number, day, [(r["arm"], r["hit_rate_at_10"]) for r in measured])
    fresh = {"rescored": scored["n_rescored"], "retrained": due}
    rows = [
        {"night": number, "day": day.isoformat(), **r, **(fresh if r["arm"] == "fresh" else {})}
        for r in measured
    ]
    return rows, users


def _canary_night(here: Settings, number: int, day: date, evaluated: dict, taken: dict, state: dict) -> None:
    """The scenario's part of a night: judge the running canary on the evidence so far (before
    tonight's scoring, as the nightly DAG does), or start the challenger on the scenario's night."""
    record = state["canary"]
    judged = canary_scenario.judge(here)
    if judged["action"] != "none":
        got = (evaluated.get("arms") or {}).get("canary") or {}
        record["nights"].append(
            {"night": number, "day": day.isoformat(), "action": judged["action"], "reason": judged["reason"],
             **{k: got.get(k) for k in EVIDENCE}}
        )  # fmt: skip
        if judged["decided"]:
            record["decision"] = {"night": number, "day": day.isoformat(), **judged}
            record["nights_to_decision"] = (
                number - record["started"]["night"] if "started" in record else None
            )
    scenario = state["scenario"]
    if number == scenario.night:
        started = canary_scenario.start(here, scenario, str(home.raw_dir(here)), taken["data_version"])
        record["started"] = {"night": number, "day": day.isoformat(), **started}


EVIDENCE = (
    "users", "hit_rate_at_10", "hit_rate_at_10_diff", "hit_rate_at_10_diff_low", "hit_rate_at_10_diff_high",
    "hit_rate_at_10_detectable", "evidence_nights", "evidence_users_canary", "evidence_users_champion",
)  # fmt: skip


def _served(settings: Settings) -> str:
    from recsys.pipelines import night

    record = night.served(settings)
    assert record is not None  # night 0 published
    return str(record["recommendations"])


def summarise(per_user: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per arm, over every (night, user) evaluated: the mean of each user metric with its 95%
    bootstrap interval over users, and for every arm but ``fresh`` the paired difference
    ``fresh - arm`` with its interval (the same users are evaluated in every arm of a night)."""
    out: dict[str, dict[str, float]] = {}
    keyed = per_user.set_index(["night", "user_id"])
    fresh = keyed[keyed["arm"] == "fresh"]
    for arm, group in keyed.groupby("arm", sort=False):
        summary: dict[str, float] = {
            "nights": int(group.index.get_level_values(0).nunique()),
            "users": len(group),
        }
        for metric in online.USER_METRICS:
            values = group[metric].to_numpy(dtype=np.float64)
            summary[metric] = float(values.mean()) if len(values) else 0.0
            summary[f"{metric}_low"], summary[f"{metric}_high"] = online.bootstrap(values)
            if arm != "fresh" and len(fresh):
                gain = (fresh[metric] - group[metric].reindex(fresh.index)).to_numpy(dtype=np.float64)
                summary[f"fresh_minus_{arm}_{metric}"] = float(gain.mean())
                low, high = online.bootstrap(gain)
                summary[f"fresh_minus_{arm}_{metric}_low"], summary[f"fresh_minus_{arm}_{metric}_high"] = (
                    low,
                    high,
                )
        out[str(arm)] = summary
    return out


def _report(
    here: Settings, out: Path, rows: list[dict], per_user: pd.DataFrame, args: dict, canary: dict | None
) -> dict:
    from recsys.tracking.plots import plot_replay

    report = {"args": args, "arms": summarise(per_user), "rows": rows}
    if canary is not None:
        report["canary"] = canary
    text = json.dumps(evaluate.json_safe(report), indent=2, default=float, allow_nan=False)
    write_text(text + "\n", out / "replay.json")
    png = plot_replay(pd.DataFrame(rows), out / "replay.png", canary, here.promotion.tolerance)
    _log_run(here, out, report, png)
    return {**report, "json": str(out / "replay.json"), "png": str(png)}


def _log_run(here: Settings, out: Path, report: dict, png: Path) -> None:
    """One run in the replay's own MLflow store (``<out>/home/mlflow``), experiment ``online``."""
    import mlflow

    from recsys.ops.registry import ONLINE, Registry

    with Registry.open(here, ONLINE).run():
        mlflow.set_tags({"kind": "replay", **{k: str(v) for k, v in report["args"].items()}})
        for row in report["rows"]:
            for metric in online.USER_METRICS:
                mlflow.log_metric(f"{row['arm']}_{metric}", float(row[metric]), step=int(row["night"]))
        mlflow.log_artifact(str(out / "replay.json"))
        mlflow.log_artifact(str(png))
