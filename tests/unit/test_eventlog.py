"""The event log's rule and bookkeeping on planted data: what a delivery changes, how nights merge,
what a folder source takes, and the plan of who a night re-scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.data import eventlog
from recsys.data.events import Delivery, FolderSource
from recsys.errors import DataError

pytestmark = pytest.mark.unit
COLUMNS = ["user_id", "movie_id", "rating", "timestamp"]


def frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS).astype({"rating": "float64"})


def delivery(rows: list[tuple]) -> Delivery:
    return Delivery(frame(rows), pd.DataFrame(columns=["movie_id", "title", "genres"]), {})


SNAPSHOT = frame([(1, 10, 4.0, 100), (1, 11, 3.0, 200), (2, 10, 5.0, 150)])


def current(users: np.ndarray) -> pd.DataFrame:
    return SNAPSHOT[SNAPSHOT["user_id"].isin(users)]


def test_take_keeps_what_changes_the_snapshot_and_counts_the_rest():
    rows = [
        (1, 12, 5.0, 300),  # new
        (1, 12, 5.0, 300),  # the same event delivered twice: a duplicate
        (1, 10, 2.0, 400),  # a re-rating, newer than the snapshot's 4.0 at 100
        (1, 11, 5.0, 50),  # older than the snapshot's rating of movie 11 at 200: superseded (and late)
        (2, 10, 5.0, 150),  # already in the snapshot as is: a duplicate
        (3, 10, 4.0, 120),  # a new user, timestamped before the watermark: kept, counted late
        (3, 11, 1.0, 130),  # user 3 rates movie 11 twice in one delivery: the earlier one is superseded
        (3, 11, 4.5, 140),
    ]
    kept, counts = eventlog.take(delivery(rows), current, event_watermark=250)
    assert kept.values.tolist() == [
        [1, 12, 5.0, 300],
        [1, 10, 2.0, 400],
        [3, 10, 4.0, 120],
        [3, 11, 4.5, 140],
    ]
    assert counts == {
        "delivered": 8,
        "duplicates": 2,
        "superseded": 2,
        "rerated": 1,
        "new": 3,
        "late": 2,
        "users": 2,
    }


def test_a_delivery_taken_twice_changes_nothing_the_second_time():
    rows = [(1, 12, 5.0, 300), (1, 10, 2.0, 400)]
    kept, _ = eventlog.take(delivery(rows), current, 250)
    merged = eventlog.merge(SNAPSHOT, kept.assign(seq=1))
    again, counts = eventlog.take(delivery(rows), lambda u: merged[merged["user_id"].isin(u)], 400)
    assert again.empty and counts["duplicates"] == 2 and counts["users"] == 0


def test_merge_lets_the_latest_timestamp_win_then_the_later_night():
    later = pd.concat(
        [
            frame([(1, 10, 2.0, 400), (1, 11, 5.0, 50)]).assign(seq=1),  # re-rating; an older one
            frame([(1, 10, 1.0, 400), (4, 10, 3.0, 10)]).assign(seq=2),  # same time as night 1: night 2 wins
        ],
        ignore_index=True,
    )
    merged = eventlog.merge(SNAPSHOT, later)
    assert merged.values.tolist() == [
        [1, 11, 3.0, 200],
        [1, 10, 1.0, 400],
        [2, 10, 5.0, 150],
        [4, 10, 3.0, 10],
    ]  # ordered by user, then time: the prepared activity's order


def _night(raw: Path, rows: list[tuple], staging: Path) -> dict:
    movies = pd.DataFrame({"movie_id": pd.Series(dtype="int64"), "title": [], "genres": []})
    return eventlog.write_night(raw, frame(rows), movies, {"release_id": "r", "cursor": {}}, staging)


def test_nights_are_read_in_order_up_to_a_pinned_one_and_name_the_changed_users(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    SNAPSHOT.rename(columns={"user_id": "userId", "movie_id": "movieId"}).to_csv(
        raw / "ratings.csv", index=False
    )
    assert [
        _night(raw, rows, tmp_path / "tmp")["seq"] for rows in ([(1, 12, 5.0, 300)], [(5, 10, 4.0, 500)])
    ] == [1, 2]
    (raw / "events" / "000003").mkdir()  # a night that never finished: no night.json, not in the log
    assert [n["seq"] for n in eventlog.nights(raw)] == [1, 2] and eventlog.last_seq(raw) == 2
    assert eventlog.changed_users(raw, 0, 2).tolist() == [1, 5]
    assert eventlog.changed_users(raw, 1, 2).tolist() == [5]
    assert eventlog.changed_users(raw, 0, 1).tolist() == [1]
    as_of_1 = eventlog.current_ratings(raw, until=1)
    assert 5 not in as_of_1["user_id"].tolist() and len(as_of_1) == 4
    assert eventlog.current_ratings(raw, np.array([5, 2])).values.tolist() == [
        [2, 10, 5.0, 150],
        [5, 10, 4.0, 500],
    ]
    assert eventlog.current_ratings(raw, np.array([], dtype=np.int64)).empty


def _drop(folder: Path, name: str, rows: list[tuple]) -> None:
    frame(rows).rename(columns={"user_id": "userId", "movie_id": "movieId"}).to_csv(
        folder / name, index=False
    )


def test_a_folder_source_takes_each_dated_file_once_late_files_and_rewritten_ones_too(tmp_path):
    source = FolderSource(tmp_path)
    _drop(tmp_path, "2024-01-02.csv", [(1, 10, 4.0, 100)])
    _drop(tmp_path, "2024-01-01.csv", [(2, 10, 4.0, 90)])
    (tmp_path / "notes.csv").write_text("not,an,event\n")  # not a dated file: never read
    pd.DataFrame({"movieId": [99], "title": ["New (2024)"], "genres": ["Drama"]}).to_csv(
        tmp_path / "2024-01-02.movies.csv", index=False
    )
    first = source.read(None)
    assert first.parts == ["2024-01-01.csv", "2024-01-02.csv", "2024-01-02.movies.csv"]
    assert first.ratings["user_id"].tolist() == [2, 1] and first.movies["movie_id"].tolist() == [99]
    assert first.watermark == "2024-01-02"
    assert source.read(first.cursor).empty  # nothing new: idempotent
    _drop(tmp_path, "2023-12-31.csv", [(3, 10, 4.0, 80)])  # dropped late, for a day already passed
    _drop(tmp_path, "2024-01-01.csv", [(2, 10, 4.0, 90), (2, 11, 3.0, 91)])  # rewritten by the export
    second = source.read(json.loads(json.dumps(first.cursor)))  # as stored in night.json
    assert second.parts == ["2023-12-31.csv", "2024-01-01.csv"] and len(second.ratings) == 3


def test_a_quiet_day_with_a_header_only_file_keeps_the_delivery_typed(tmp_path):
    _drop(tmp_path, "2024-01-01.csv", [(2, 10, 4.0, 90)])
    (tmp_path / "2024-01-02.csv").write_text("userId,movieId,rating,timestamp\n")  # nobody rated
    taken = FolderSource(tmp_path).read(None)
    assert taken.parts == ["2024-01-01.csv", "2024-01-02.csv"] and taken.watermark == "2024-01-02"
    assert taken.ratings.dtypes.astype(str).tolist() == ["int64", "int64", "float64", "int64"]


def test_a_folder_source_names_a_bad_file(tmp_path):
    (tmp_path / "2024-01-01.csv").write_text("user,movie\n1,2\n")
    with pytest.raises(
        DataError, match=r"2024-01-01.csv lacks column\(s\) \['user_id', 'movie_id', 'rating'"
    ):
        FolderSource(tmp_path).read(None)
    with pytest.raises(DataError, match="does not exist; create it"):
        FolderSource(tmp_path / "missing").read(None)
