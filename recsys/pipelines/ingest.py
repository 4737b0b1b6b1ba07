"""The tasks of DAG ``recsys_ingest``: snapshot the raw release, validate it, prepare it by the
protocol, validate the prepared data; on later days, take the night's events into the snapshot.

Each takes the resolved Settings plus paths and ids and returns a small JSON-able dict (paths and
ids, never data frames), so tasks pass results through Airflow XCom. A snapshot or a prepared folder
that fails its suite never replaces the one in place. ``ingest`` and ``prepare`` take the ``data``
lock (recsys.ops.locks).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pandas as pd

from recsys import home
from recsys.config import Settings
from recsys.data import eventlog
from recsys.data import prepared as prep
from recsys.errors import DataError
from recsys.files import read_parquet, swap_in
from recsys.ops.locks import locked


@locked("data")
def ingest(settings: Settings, validate: bool = True) -> dict:
    """Snapshot the raw dataset into the DVC workspace.

    With ``validate`` the ratings_raw suite runs on the staged copy, so a snapshot that fails it
    never replaces the current one (ValidationFailed propagates).
    """
    from recsys.data import snapshots

    summary: dict = {}

    def check(folder: Path) -> None:
        summary.update(validate_raw(settings, str(folder)))

    result = snapshots.ingest(settings, check=check if validate else None)
    return {
        "dataset": result.dataset,
        "raw_dir": str(result.raw_dir),
        "data_version": result.data_version,
        "pushed": result.pushed,
        "validation": summary or None,
    }


def validate_raw(settings: Settings, raw_dir: str) -> dict:
    """Run suite ratings_raw on the raw snapshot (the release and its nights); raises ValidationFailed."""
    from recsys.data.validation import validate_ratings

    return validate_ratings(eventlog.current_ratings(Path(raw_dir)), home.data_docs(settings))


@locked("data")
def ingest_events(settings: Settings, source: str | None = None) -> dict:
    """Take the events the source holds beyond its watermark into the snapshot, as one night.

    The delivery is validated (suites ``events``, ``movie_events``) before anything is written; what
    changes the snapshot is written as the next night of its event log (recsys.data.eventlog) and
    the snapshot becomes a new DVC version. Nothing new: nothing is written. ``source``: a folder or
    an SQLAlchemy URL instead of the ``events.source`` setting.
    """
    from recsys.data import events, snapshots
    from recsys.data.event_checks import validate_delivery

    raw = home.raw_dir(settings)
    if not (raw / "ratings.csv").is_file():
        raise DataError(f"no snapshot of {settings.data.dataset} to add events to; run `recsys ingest` first")
    reader = events.open_source(settings, source)
    nights = eventlog.nights(raw)
    cursor = next((n["cursor"] for n in reversed(nights) if n.get("source") == reader.description), None)
    delivery = reader.read(cursor)
    base = {"dataset": settings.data.dataset, "source": reader.description, "raw_dir": str(raw)}
    if delivery.empty:
        return {
            **base,
            "taken": False,
            "data_version": snapshots.data_version(raw),
            "watermark": delivery.watermark,
        }
    movies_now = eventlog.current_movies(raw, tags=False)
    validation = validate_delivery(delivery, movies_now, home.data_docs(settings))
    kept, record = _night(settings, raw, reader.description, delivery, nights)
    night = eventlog.write_night(raw, kept, delivery.movies, record, home.workspace(settings) / "tmp")
    version = snapshots.track(raw, settings)
    return {
        **base,
        "taken": True,
        "night": night["seq"],
        "data_version": version,
        "watermark": delivery.watermark,
        "parts": delivery.parts,
        "counts": record["counts"],
        "validation": validation,
    }


def _night(
    settings: Settings, raw: Path, source: str, delivery, nights: list[dict]
) -> tuple[pd.DataFrame, dict]:  # noqa: ANN001
    """What of ``delivery`` changes the snapshot, and the night.json record that goes with it."""
    activity, since = eventlog.prepared_base(raw, home.prepared_dir(settings))
    watermark = int(nights[-1]["event_watermark"]) if nights else _release_watermark(raw, activity)
    kept, counts = eventlog.take(
        delivery, lambda users: eventlog.current_ratings(raw, users, activity, since), watermark
    )
    return kept, {
        "source": source,
        "cursor": delivery.cursor,
        "parts": delivery.parts,
        "watermark": delivery.watermark,
        "release_id": eventlog.release_id(raw),
        "counts": {**counts, "movies_added": len(delivery.movies)},
        "event_watermark": max(watermark, int(kept["timestamp"].max()) if len(kept) else watermark),
    }


def _release_watermark(raw: Path, activity: Path | None) -> int:
    """The latest timestamp of the release (read from its prepared activity when there is one)."""
    if activity is not None:
        return int(read_parquet(activity, ["timestamp"], eventlog.PREPARE_AGAIN)["timestamp"].max())
    return int(prep.load_ratings(raw / "ratings.csv")["timestamp"].max())


@locked("data")
def prepare(settings: Settings, raw_dir: str, data_version: str = "") -> dict:
    """Prepare by the protocol into a staging folder, validate it, then swap it in and track it.

    Returns the new :class:`~recsys.data.prepared.PreparedRef` as a dict, with the counts."""
    from recsys.data import snapshots
    from recsys.data.validation import validate_interactions

    raw = Path(raw_dir)
    prepared = prep.prepare(eventlog.current_ratings(raw), eventlog.current_movies(raw), settings.data)
    prepared.meta["raw_data_version"] = data_version
    prepared.meta["release_id"] = eventlog.release_id(raw)
    prepared.meta["events_seq"] = eventlog.last_seq(raw)
    prepared.meta["prepared_id"] = uuid.uuid4().hex  # pins this folder's content for scoring runs
    validate_interactions(prepared, settings.data.rating_threshold, home.data_docs(settings))
    target = home.prepared_dir(settings)
    staging = target.with_name(target.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    prep.save_prepared(prepared, staging)
    swap_in(staging, target)
    snapshots.track(target, settings)
    return {
        **prep.PreparedRef.at(target).as_dict(),
        **{k: v for k, v in prepared.meta.items() if k.startswith("n_")},
    }


def validate_prepared(settings: Settings, prepared_dir: str) -> dict:
    """Re-run suite interactions on the prepared data in place; raises ValidationFailed."""
    from recsys.data.validation import validate_interactions

    prepared = prep.load_prepared(Path(prepared_dir))
    return validate_interactions(prepared, settings.data.rating_threshold, home.data_docs(settings))


def locate_prepared(settings: Settings) -> dict:
    """The current prepared data of ``data.dataset``: its PreparedRef as a dict, with the dataset
    (DataError if there is none)."""
    return {"dataset": settings.data.dataset, **prep.PreparedRef.at(home.prepared_dir(settings)).as_dict()}
