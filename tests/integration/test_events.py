"""The night's events into the snapshot, for real: a folder of dated files and an SQLite database
through SQLAlchemy, validated by GX, written as nights of the event log, versioned by DVC.

One release is ingested for the module; the tests run in order on it, as nights do.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from recsys import home
from recsys.config import PROJECT_ROOT, load_settings
from recsys.data import eventlog, snapshots
from recsys.data.prepared import load_prepared
from recsys.errors import DataError, ValidationFailed
from recsys.pipelines import ingest

pytestmark = pytest.mark.integration
RATINGS = pd.read_csv(PROJECT_ROOT / "data" / "ml-latest-small" / "ratings.csv")
LAST = int(RATINGS["timestamp"].max())  # the release's event watermark


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    home_dir = tmp_path_factory.mktemp("events-home")
    settings = load_settings([f"paths.home={home_dir}"], env={})
    ingest.ingest(settings, validate=False)
    return settings


def drop(folder: Path, name: str, rows: list[tuple]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    columns = ["userId", "movieId", "rating", "timestamp"]
    pd.DataFrame(rows, columns=columns).to_csv(folder / name, index=False)


def version(settings) -> str:
    return snapshots.data_version(home.raw_dir(settings))


def test_a_night_of_files_becomes_a_dvc_version_and_a_rerun_changes_nothing(settings):
    folder = home.raw_dir(settings).parents[2] / "events"  # the default source: $RECSYS_HOME/events
    before = version(settings)
    assert not ingest.ingest_events(settings)["taken"] and folder.is_dir()  # created empty: nothing new
    first = RATINGS.iloc[0]  # user 1's rating of movie 1, delivered again as is
    drop(
        folder,
        "2018-09-25.csv",
        [
            (1, 1, float(first["rating"]), int(first["timestamp"])),  # a duplicate of the release
            (1, 2, 5.0, LAST + 10),  # new
            (1, 3, 1.0, LAST + 20),  # re-rates movie 3 (4.0 in the release)
            (100_000, 260, 5.0, LAST - 50),  # a new user, timestamped before the watermark: late
        ],
    )
    taken = ingest.ingest_events(settings)
    assert taken["taken"] and taken["night"] == 1 and taken["parts"] == ["2018-09-25.csv"]
    assert taken["counts"] == {
        "delivered": 4,
        "duplicates": 1,
        "superseded": 0,
        "rerated": 1,
        "new": 2,
        "late": 1,
        "users": 2,
        "movies_added": 0,
    }
    assert taken["data_version"] == version(settings) != before
    assert taken["validation"]["events"]["success"]
    night = json.loads((home.raw_dir(settings) / "events" / "000001" / "night.json").read_text())
    assert night["cursor"]["files"].keys() == {"2018-09-25.csv"} and night["event_watermark"] == LAST + 20
    again = ingest.ingest_events(settings)
    assert not again["taken"] and again["data_version"] == taken["data_version"]
    assert eventlog.last_seq(home.raw_dir(settings)) == 1


def test_bad_events_stop_the_night_with_a_data_docs_page_and_change_nothing(settings):
    folder = home.raw_dir(settings).parents[2] / "events"
    before = version(settings)
    drop(
        folder,
        "2018-09-26.csv",
        [(1, 4, 7.0, LAST + 30), (2, 999_999_999, 4.0, LAST + 40), (3, 1, 4.0, 4_000_000_000)],
    )
    with pytest.raises(ValidationFailed) as failed:
        ingest.ingest_events(settings)
    report = str(failed.value)
    assert "suite 'events' failed" in report and "[rating]" in report
    assert "[known_movie]" in report and "[timestamp]" in report
    assert Path(failed.value.docs).is_file() and Path(failed.value.docs).parent.name == "events"
    assert version(settings) == before and eventlog.last_seq(home.raw_dir(settings)) == 1
    # the export job fixes the file, and adds the movie that was missing, with its title
    drop(folder, "2018-09-26.csv", [(1, 4, 5.0, LAST + 30), (2, 999_999_999, 4.0, LAST + 40)])
    pd.DataFrame({"movieId": [999_999_999], "title": ["New Movie (2018)"], "genres": ["Drama"]}).to_csv(
        folder / "2018-09-26.movies.csv", index=False
    )
    taken = ingest.ingest_events(settings)
    assert taken["night"] == 2 and taken["counts"]["new"] == 2 and taken["counts"]["movies_added"] == 1
    assert taken["parts"] == ["2018-09-26.csv", "2018-09-26.movies.csv"]


def test_prepare_reads_the_release_with_its_nights(settings):
    raw = home.raw_dir(settings)
    prepared = ingest.prepare(settings, str(raw), version(settings))
    data = load_prepared(Path(prepared["prepared_dir"]))
    activity = data.activity.set_index(["user_id", "movie_id"])
    assert activity.loc[(1, 3), "rating"] == 1.0 and activity.loc[(1, 2), "rating"] == 5.0  # re-rated, new
    assert (100_000, 260) in activity.index and (2, 999_999_999) in activity.index
    assert len(data.activity) == len(RATINGS) + 4  # four new ratings over two nights
    assert data.meta["events_seq"] == 2 and data.meta["release_id"] == eventlog.release_id(raw)
    assert eventlog.prepared_base(raw, Path(prepared["prepared_dir"]))[1] == 2
    # the snapshot read from the prepared activity plus later nights equals the snapshot read whole
    drop(raw.parents[2] / "events", "2018-09-27.csv", [(1, 5, 4.5, LAST + 60)])
    ingest.ingest_events(settings)
    activity_path, since = eventlog.prepared_base(raw, Path(prepared["prepared_dir"]))
    fast = eventlog.current_ratings(raw, None, activity_path, since)
    pd.testing.assert_frame_equal(fast, eventlog.current_ratings(raw))


def _app_db(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS ratings (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "userId INTEGER, movieId INTEGER, rating REAL, timestamp INTEGER)"
        )
    return f"sqlite:///{path}"


def _insert(path: Path, rows: list[tuple]) -> None:
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO ratings (userId, movieId, rating, timestamp) VALUES (?, ?, ?, ?)", rows)


def test_an_application_database_is_read_from_its_watermark(settings, tmp_path):
    db = tmp_path / "app.db"
    url = _app_db(db)
    _insert(db, [(100_001, 1, 4.0, LAST + 100), (100_001, 2, 3.5, LAST + 110)])
    first = ingest.ingest_events(settings, url)
    assert first["taken"] and first["counts"]["new"] == 2 and first["watermark"] == "2"
    assert first["source"] == url  # no password in it to mask
    # a rating inserted late with an old timestamp is above the id watermark: taken, counted late
    _insert(db, [(100_001, 1, 2.0, LAST + 120), (100_002, 1, 4.0, LAST - 1000)])
    second = ingest.ingest_events(settings, url)
    assert second["counts"]["rerated"] == 1 and second["counts"]["late"] == 1
    assert not ingest.ingest_events(settings, url)["taken"]
    # the folder source keeps its own watermark beside the database's
    assert not ingest.ingest_events(settings)["taken"]


def test_a_missing_table_or_cursor_column_is_named(settings, tmp_path):
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(DataError, match="no table 'ratings'"):
        ingest.ingest_events(settings, f"sqlite:///{empty}")
    with sqlite3.connect(empty) as conn:
        conn.execute("CREATE TABLE ratings (userId INTEGER, movieId INTEGER, rating REAL, timestamp INTEGER)")
    with pytest.raises(DataError, match="has no column 'id' \\(events.cursor\\)"):
        ingest.ingest_events(settings, f"sqlite:///{empty}")
