"""Every night, how yesterday's lists did: the task ``evaluate_served`` of DAG
``recsys_score_nightly``, and the history ``recsys report`` prints.

The lists served now were built from the snapshot up to one night of its event log
(recsys.pipelines.night records which); the nights after it are what people did since. Their
positives (rating >= ``data.rating_threshold``) for movies the user had not rated before are
matched against the served lists with the metrics of recsys.evaluation.online, over the users with
at least one such positive; coverage, popularity and churn (against the lists served the night
before) are computed over all served lists.

Each evaluation is one row of ``<home>/online/nights.csv`` (kept across restarts; an evaluation of
the same lists on the same nights replaces its row, so re-running a night is idempotent) and one run
in the MLflow experiment ``mlflow.online_experiment`` (metrics; model and data versions as tags; the
plot of the recent nights).
"""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys import home
from recsys.config import Settings
from recsys.data import eventlog
from recsys.evaluation import online
from recsys.files import read_parquet, write_text
from recsys.pipelines import evidence, night
from recsys.runtime.arms import CANARY_ARM, CHAMPION_ARM, Arms

log = logging.getLogger(__name__)
TABLE = "nights.csv"
KEY = ["data_version", "nights", "arm"]  # one row per (served lists, nights of events evaluated, arm)
ALL = "all"  # the row over every served list, whatever its arm
SHOWN = ["night", "arm", "model_version", "users", "positives", *online.USER_METRICS, *online.LIST_METRICS]


def table_path(settings: Settings) -> Path:
    return settings.paths.home / "online" / TABLE


def history(settings: Settings, nights: int | None = None) -> pd.DataFrame:
    """The evaluated nights, oldest first (the last ``nights`` of them when given)."""
    path = table_path(settings)
    if not path.is_file():
        return pd.DataFrame(columns=SHOWN)
    rows = pd.read_csv(
        path, dtype={"model_version": str, "data_version": str, "salt": str, "champion_version": str}
    )
    if "arm" not in rows.columns:  # a table from before arms: every row is over all lists
        rows = rows.assign(arm=ALL)
    if nights:  # the last nights, with every arm's row of each
        rows = rows[rows["nights"].isin(rows["nights"].drop_duplicates().tail(nights))]
    return rows.reset_index(drop=True)


def _lists(path: Path) -> dict[int, np.ndarray]:
    frame = read_parquet(path, ["user_id", "item_ids"], fix="run `recsys score --full` and publish")
    return dict(zip(frame["user_id"].tolist(), frame["item_ids"]))


def new_positives(settings: Settings, since: int, until: int) -> tuple[dict[int, set[int]], int]:
    """Per user: the positives of nights ``since``+1..``until`` for movies the user had not rated
    by night ``since``; with how many positives were re-ratings (left out)."""
    raw = home.raw_dir(settings)
    delta = eventlog.ratings_after(raw, since, until=until)
    positive = delta[delta["rating"] >= settings.data.rating_threshold]
    activity, base = eventlog.prepared_base(raw, home.prepared_dir(settings))
    before = eventlog.current_ratings(raw, positive["user_id"].unique(), activity, base, until=since)
    rated = pd.MultiIndex.from_frame(before[["user_id", "movie_id"]])
    fresh = positive[~pd.MultiIndex.from_frame(positive[["user_id", "movie_id"]]).isin(rated)]
    grouped = fresh.groupby("user_id")["movie_id"].agg(lambda s: set(s.astype(int).tolist()))
    return {int(u): movies for u, movies in grouped.items()}, len(positive) - len(fresh)


def measure(
    lists: dict[int, np.ndarray],
    positives: dict[int, set[int]],
    catalogue: pd.DataFrame,
    previous: dict[int, np.ndarray] | None,
    with_intervals: bool = False,
) -> tuple[dict, pd.DataFrame]:
    """Every metric of recsys.evaluation.online for one set of lists (``catalogue``: movie_id,
    train_count of the model's catalogue), and the per-user metrics it averaged
    (recsys.evaluation.online.per_user)."""
    users = online.per_user(lists, positives)
    known = set(catalogue["movie_id"].tolist())
    wanted = [m for u in users["user_id"] for m in positives[int(u)]]
    return {
        **online.summary(users, with_intervals),
        "users_without_list": sum(1 for u, p in positives.items() if p and u not in lists),
        "positives_unknown_to_model": sum(m not in known for m in wanted),
        "coverage_at_10": online.coverage(lists, len(catalogue)),
        "popularity_percentile": online.popularity_percentile(
            lists, catalogue.set_index("movie_id")["train_count"]
        ),
        "churn_at_10": online.churn(lists, previous) if previous is not None else float("nan"),
    }, users


def json_safe(value: Any) -> Any:
    """``value`` (a row, or dicts and lists of them) with every NaN or infinite number as None: a
    metric with nothing to measure (churn on the first night) is null in JSON and XCom, not NaN."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return None if isinstance(value, float) and not np.isfinite(value) else value


def evaluate_served(settings: Settings, night_date: str | None = None) -> dict:
    """Evaluate the lists served now on the events that came after them (module docstring).

    Returns the night's row over every served list (arm ``all``), with ``arms`` (arm -> its row)
    when a canary served beside the champion, the canary's row holding its evidence
    (recsys.pipelines.evidence); or ``{"evaluated": False, "reason": ...}`` when there is nothing
    to evaluate (no lists served yet, no new nights, a new release since).
    """
    served = night.served(settings)
    raw = home.raw_dir(settings)
    if served is None:
        return {"evaluated": False, "reason": "no lists are served yet"}
    since, until = int(served["events_seq"]), eventlog.last_seq(raw)
    if served["release_id"] != eventlog.release_id(raw) or eventlog.night_id(raw, since) != served.get(
        "night_id", ""
    ):
        return {"evaluated": False, "reason": "the event log was replaced since the lists were served"}
    if until <= since:
        return {"evaluated": False, "reason": f"no events since the lists served now (night {since})"}
    positives, rerated = new_positives(settings, since, until)
    arms = Arms.from_dict(served.get("arms"), champion=str(served["model_version"]))
    lists, arm_of = _served(Path(served["recommendations"]), arms, positives)
    previous = (served.get("previous") or {}).get("recommendations")
    before = _lists(Path(previous)) if previous and Path(previous).is_file() else None
    path = Path(served["recommendations"])
    catalogue = read_parquet(path.parent / "catalogue.parquet", ["movie_id", "train_count"])
    base = {
        "night": night_date or datetime.now(UTC).date().isoformat(),
        "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data_version": str(served["data_version"]),
        "nights": f"{since + 1}-{until}",
        "positives_rerated": rerated,
    }
    metrics, users = measure(lists, positives, catalogue, before)
    rows = {ALL: {**base, "arm": ALL, "model_version": arms.label, **metrics}}
    if arms.canary is not None:
        for arm, version in arms.versions().items():
            mine = {u: p for u, p in positives.items() if arm_of[u] == arm}
            own = {u: items for u, items in lists.items() if arm_of[u] == arm}
            got, _ = measure(own, mine, catalogue, before)
            rows[arm] = {**base, "arm": arm, "model_version": version, **got}
        rows[CANARY_ARM].update(salt=arms.salt, champion_version=arms.champion)
    data_version, span = str(served["data_version"]), f"{since + 1}-{until}"
    evidence.keep_users(settings, data_version, span, users.assign(arm=users["user_id"].map(arm_of)))
    _upsert(settings, list(rows.values()))
    if arms.canary is not None:
        rows[CANARY_ARM].update(evidence.compare_arms(*evidence.gather(settings, history(settings), arms)))
        _upsert(settings, list(rows.values()))
        evidence.record(settings, arms, rows[CANARY_ARM])
    row = rows[ALL]
    row["mlflow_run_id"] = _log_run(settings, row, rows)
    log.info("served lists on nights %s: %s", row["nights"], {k: row[k] for k in SHOWN if k in row})
    out = {"evaluated": True, **json_safe(row)}
    if arms.canary is not None:
        out["arms"] = {arm: json_safe(r) for arm, r in rows.items() if arm != ALL}
    return out


def _served(
    path: Path, arms: Arms, positives: dict[int, set[int]]
) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """The served lists by user, and each user's arm: its list's, or for a user without a list
    (who had positives), the arm the hash gives (recsys.runtime.arms)."""
    import pyarrow.parquet as pq

    has_arm = "arm" in pq.read_schema(path).names
    columns = ["user_id", "item_ids", *(["arm"] if has_arm else [])]
    frame = read_parquet(path, columns, fix="run `recsys score --full` and publish")
    ids = frame["user_id"].tolist()
    arm_of = dict(zip(ids, frame["arm"] if has_arm else [CHAMPION_ARM] * len(ids)))
    without = np.array(sorted(set(positives) - set(arm_of)), dtype=np.int64)
    arm_of.update(zip(without.tolist(), arms.assign(without)))
    return dict(zip(ids, frame["item_ids"])), arm_of


def _upsert(settings: Settings, rows: list[dict]) -> None:
    """Write ``rows`` into the table, replacing rows of the same lists, nights and arm."""
    table = history(settings)
    fresh = pd.DataFrame(rows)
    if len(table):
        keys = set(zip(*(fresh[c].astype(str) for c in KEY)))
        mine = pd.Series(list(zip(*(table[c].astype(str) for c in KEY))), index=table.index).isin(keys)
        table = pd.concat([table[~mine], fresh], ignore_index=True)
    else:
        table = fresh
    write_text(table.to_csv(index=False), table_path(settings))


def _numbers(row: dict, prefix: str = "") -> dict[str, float]:
    return {
        f"{prefix}{k}": float(v)
        for k, v in row.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
    }


def _log_run(settings: Settings, row: dict, arms: dict[str, dict]) -> str:
    """One MLflow run in the online experiment: the night's metrics over all lists, each arm's with
    its name as a prefix (``canary_hit_rate_at_10``) when a canary served, the versions, and the plot
    of the recent nights."""
    import mlflow

    from recsys.ops.registry import ONLINE, Registry
    from recsys.tracking.plots import plot_online

    numbers = _numbers(row)
    for arm, got in arms.items():
        if arm != ALL:
            numbers.update(_numbers(got, f"{arm}_"))
    tags = {k: str(row[k]) for k in ("night", "model_version", "data_version", "nights")}
    recent = history(settings, 60)
    with Registry.open(settings, ONLINE).run() as active, tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags(tags)
        mlflow.log_metrics(numbers)
        mlflow.log_artifact(str(plot_online(recent[recent["arm"] == ALL], Path(tmp) / "online_metrics.png")))
        return str(active.info.run_id)


def report(settings: Settings, nights: int = 14, png: Path | None = None) -> tuple[pd.DataFrame, Path | None]:
    """The last ``nights`` evaluated nights (SHOWN columns) and the plot written to ``png`` (default
    ``<home>/online/report.png``; None when there is no night yet)."""
    from recsys.tracking.plots import plot_online

    rows = history(settings, nights)
    if rows.empty:
        return rows, None
    path = plot_online(rows[rows["arm"] == ALL], png or settings.paths.home / "online" / "report.png")
    return rows[[c for c in SHOWN if c in rows.columns]], path


def canary_evidence(rows: pd.DataFrame) -> list[dict]:
    """The evidence of each canary night among ``rows`` (history's frame), oldest first."""
    if "evidence_nights" not in rows.columns:
        return []
    found = rows[(rows["arm"] == CANARY_ARM) & rows["evidence_nights"].notna()]
    return [json_safe(r) for r in found.to_dict(orient="records")]
