"""The tasks of DAG ``recsys_ingest``: snapshot the raw release, validate it, prepare it by the
protocol, validate the prepared data.

Each takes the resolved Settings plus paths and ids and returns a small JSON-able dict (paths and
ids, never data frames), so tasks pass results through Airflow XCom. A snapshot or a prepared folder
that fails its suite never replaces the one in place. ``ingest`` and ``prepare`` take the ``data``
lock (recsys.ops.locks).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from recsys import home
from recsys.config import Settings
from recsys.data import prepared as prep
from recsys.files import swap_in
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
    """Run suite ratings_raw on the raw snapshot; raises ValidationFailed."""
    from recsys.data.validation import validate_ratings

    return validate_ratings(prep.load_ratings(Path(raw_dir) / "ratings.csv"), home.data_docs(settings))


@locked("data")
def prepare(settings: Settings, raw_dir: str, data_version: str = "") -> dict:
    """Prepare by the protocol into a staging folder, validate it, then swap it in and track it.

    Returns the new :class:`~recsys.data.prepared.PreparedRef` as a dict, with the counts."""
    from recsys.data import snapshots
    from recsys.data.validation import validate_interactions

    raw = Path(raw_dir)
    prepared = prep.prepare(
        prep.load_ratings(raw / "ratings.csv"), prep.load_movies(raw / "movies.csv"), settings.data
    )
    prepared.meta["raw_data_version"] = data_version
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
