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
from recsys.pipelines import night

log = logging.getLogger(__name__)
TABLE = "nights.csv"
KEY = ["data_version", "nights"]  # one row per (served lists, nights of events evaluated)
SHOWN = ["night", "model_version", "users", "positives", *online.USER_METRICS, *online.LIST_METRICS]


def table_path(settings: Settings) -> Path:
    return settings.paths.home / "online" / TABLE


def history(settings: Settings, nights: int | None = None) -> pd.DataFrame:
    """The evaluated nights, oldest first (the last ``nights`` of them when given)."""
    path = table_path(settings)
    if not path.is_file():
        return pd.DataFrame(columns=SHOWN)
    rows = pd.read_csv(path, dtype={"model_version": str, "data_version": str})
    return rows.tail(nights).reset_index(drop=True) if nights else rows


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
) -> dict:
    """Every metric of recsys.evaluation.online for one set of lists (``catalogue``: movie_id,
    train_count of the model's catalogue)."""
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
    }


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

    Returns the night's row, or ``{"evaluated": False, "reason": ...}`` when there is nothing to
    evaluate (no lists served yet, no new nights, a new release since).
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
    path = Path(served["recommendations"])
    previous = (served.get("previous") or {}).get("recommendations")
    catalogue = read_parquet(path.parent / "catalogue.parquet", ["movie_id", "train_count"])
    metrics = measure(
        _lists(path),
        positives,
        catalogue,
        _lists(Path(previous)) if previous and Path(previous).is_file() else None,
    )
    row = {
        "night": night_date or datetime.now(UTC).date().isoformat(),
        "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_version": str(served["model_version"]),
        "data_version": str(served["data_version"]),
        "nights": f"{since + 1}-{until}",
        "positives_rerated": rerated,
        **metrics,
    }
    _upsert(settings, row)
    row["mlflow_run_id"] = _log_run(settings, row)
    log.info("served lists on nights %s: %s", row["nights"], {k: row[k] for k in SHOWN if k in row})
    return {"evaluated": True, **json_safe(row)}


def _upsert(settings: Settings, row: dict) -> None:
    table = history(settings)
    if len(table):
        table = table[~((table["data_version"] == row["data_version"]) & (table["nights"] == row["nights"]))]
    table = pd.concat([table, pd.DataFrame([row])], ignore_index=True) if len(table) else pd.DataFrame([row])
    write_text(table.to_csv(index=False), table_path(settings))


def _log_run(settings: Settings, row: dict) -> str:
    """One MLflow run in the online experiment: the night's metrics, versions and the recent plot."""
    import mlflow

    from recsys.ops.registry import ONLINE, Registry
    from recsys.tracking.plots import plot_online

    numbers = {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and np.isfinite(v)}
    tags = {k: str(row[k]) for k in ("night", "model_version", "data_version", "nights")}
    with Registry.open(settings, ONLINE).run() as active, tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags(tags)
        mlflow.log_metrics(numbers)
        mlflow.log_artifact(str(plot_online(history(settings, 60), Path(tmp) / "online_metrics.png")))
        return str(active.info.run_id)


def report(settings: Settings, nights: int = 14, png: Path | None = None) -> tuple[pd.DataFrame, Path | None]:
    """The last ``nights`` evaluated nights (SHOWN columns) and the plot written to ``png`` (default
    ``<home>/online/report.png``; None when there is no night yet)."""
    from recsys.tracking.plots import plot_online

    rows = history(settings, nights)
    if rows.empty:
        return rows, None
    path = plot_online(rows, png or settings.paths.home / "online" / "report.png")
    return rows[[c for c in SHOWN if c in rows.columns]], path
