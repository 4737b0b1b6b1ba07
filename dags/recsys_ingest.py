"""
### recsys_ingest: the day's events into the snapshot; the first time, the MovieLens release

Daily. `choose` takes one of two branches:

- **the night's events** (every day once there is a snapshot): `take_events` reads what the event
  source (setting `events.source`: a folder of dated files `YYYY-MM-DD.csv|.parquet`, or the
  application's database through SQLAlchemy) holds beyond its watermark, validates it with suites
  `events` and `movie_events`, and adds what changes the snapshot as the next night of its event
  log: a new DVC version. Repeats, superseded ratings and late events are counted in its result.
  Nothing new: nothing is written. `recsys_score_nightly` then re-scores the users it changed;
  `recsys_retrain` prepares everything again weekly.
- **the release** (the first run, or Param `release`): `ingest` -> `validate_raw` -> `prepare` ->
  `validate_prepared` -> asset **recsys_prepared_data** (which schedules `recsys_retrain`). Taking
  a release again replaces the snapshot and starts a new event log.

Nothing served is replaced by data that failed validation: `ingest` runs suite `ratings_raw` on the
*staged* snapshot before it swaps in (a bad snapshot fails there and the previous one stays),
`validate_raw` then re-runs the suite on the snapshot now in place and reports its summary, and
`prepare` validates suite `interactions` before swapping the prepared folder in. A failed
validation fails the task at once (no retries) and emits no asset event, so nothing downstream runs.

Bad events fail `take_events` at once with a "Data Docs" link, before anything is written.

Params: `dataset` (empty = the `data.dataset` setting), `release` (take the release again),
`events_source` (empty = the `events.source` setting). Settings come from the environment
(`RECSYS_HOME`, `RECSYS__SECTION__KEY`).
"""

from __future__ import annotations

from _common import (
    DEFAULT_ARGS,
    PREPARED_DATA,
    START_DATE,
    DataDocsLink,
    fail_fast_on_bad_input,
    load,
    params,
    with_links,
)
from airflow.sdk import Param, dag, get_current_context, task


def _settings():  # noqa: ANN202
    return load(**{"data.dataset": params()["dataset"]})


@task.branch
def choose() -> str:
    """The release when there is no snapshot yet (or Param release), else the night's events."""
    from recsys import home

    settings = _settings()
    if params()["release"] or not (home.raw_dir(settings) / "ratings.csv").is_file():
        return "ingest"
    return "take_events"


@task
def take_events() -> dict:
    """The events beyond the source's watermark, validated, as the next night of the snapshot's log."""
    from recsys.pipelines import ingest

    with fail_fast_on_bad_input():
        taken = ingest.ingest_events(_settings(), params()["events_source"] or None)
    print(f"events: {taken}")
    return taken


@task
def ingest() -> dict:
    """DVC snapshot of the raw release, validated while staged (the current one stays if it fails)."""
    from recsys.pipelines import ingest

    with fail_fast_on_bad_input():
        return ingest.ingest(_settings(), validate=True)


@task
def validate_raw(snapshot: dict) -> dict:
    """Suite ratings_raw on the snapshot in place; its summary becomes this task's result."""
    from recsys.pipelines import ingest

    with fail_fast_on_bad_input():
        summary = ingest.validate_raw(_settings(), snapshot["raw_dir"])
    return {
        "raw_dir": snapshot["raw_dir"],
        "data_version": snapshot["data_version"],
        "validation": summary,
    }


@task
def prepare(snapshot: dict) -> dict:
    """Protocol split, id maps, catalogue; validated (suite interactions) before it swaps in."""
    from recsys.pipelines import ingest

    with fail_fast_on_bad_input():
        return ingest.prepare(_settings(), snapshot["raw_dir"], snapshot["data_version"])


@task(outlets=[PREPARED_DATA])
def validate_prepared(prepared: dict) -> dict:
    """Suite interactions on the prepared data in place, then announce it to recsys_retrain."""
    from recsys.pipelines import ingest

    settings = _settings()
    with fail_fast_on_bad_input():
        summary = ingest.validate_prepared(settings, prepared["prepared_dir"])
    get_current_context()["outlet_events"][PREPARED_DATA].extra = {
        "dataset": settings.data.dataset,
        "prepared_dir": prepared["prepared_dir"],
        "data_version": prepared["data_version"],
    }
    return {**prepared, "validation": summary}


@dag(
    dag_id="recsys_ingest",
    schedule="@daily",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["recsys", "data"],
    doc_md=__doc__,
    params={
        "dataset": Param(
            None,
            type=["null", "string"],
            enum=[None, "ml-latest-small", "ml-20m"],
            description="MovieLens release to ingest; empty = the data.dataset setting",
        ),
        "release": Param(
            False,
            type="boolean",
            description="take the release again (replaces the snapshot, starts a new event log)",
        ),
        "events_source": Param(
            None,
            type=["null", "string"],
            description="event folder or SQLAlchemy URL; empty = the events.source setting",
        ),
    },
)
def recsys_ingest() -> None:
    docs = DataDocsLink()  # every task here may fail a suite
    branch = choose()
    branch >> with_links(take_events(), docs)
    snapshot = with_links(ingest(), docs)
    branch >> snapshot
    prepared = with_links(prepare(with_links(validate_raw(snapshot), docs)), docs)
    with_links(validate_prepared(prepared), docs)


recsys_ingest()
