"""A MovieLens release played as a stream of events (``recsys replay`` and ``make demo``).

The ratings before a start day are the initial release (``release/``: ratings.csv, movies.csv and
the licence); the days from the start on become dated event files in the layout of
recsys.data.events, one file per step of ``step_days`` days, named by the step's first day. A movie
first rated in a step arrives with it (``YYYY-MM-DD.movies.csv``): the initial release lists only
the movies rated before the start (and those never rated), as a live catalogue would.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd

from recsys.errors import DataError

DAY_S = 86_400


def day_start(day: date) -> int:
    """The Unix time of ``day``'s first second (UTC)."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


@dataclass(frozen=True)
class Stream:
    """A release split at ``start``: the initial release folder and the steps' event files."""

    release: Path
    steps: list[tuple[date, Path, Path | None]]  # (first day, ratings file, movies file or None)


def read_release(source: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ratings.csv and movies.csv of a MovieLens folder, with MovieLens's column names."""
    paths = [Path(source) / name for name in ("ratings.csv", "movies.csv")]
    if missing := [p.name for p in paths if not p.is_file()]:
        raise DataError(f"{source} holds no {missing}: give a MovieLens release folder")
    return pd.read_csv(paths[0]), pd.read_csv(paths[1])


def last_day(ratings: pd.DataFrame) -> date:
    """The day (UTC) of the latest rating."""
    return datetime.fromtimestamp(int(ratings["timestamp"].max()), UTC).date()


def split(source: Path, start: date, steps: int, step_days: int, out: Path) -> Stream:
    """Write the initial release (ratings before ``start``) and ``steps`` event files of
    ``step_days`` days each into ``out`` (``out/release``, ``out/events``); ``out`` is replaced.

    Raises DataError when the start leaves no rating before it, or is after the last rating.
    """
    if steps < 1 or step_days < 1:
        raise DataError(f"steps and step_days must be >= 1, got {steps} and {step_days}")
    ratings, movies = read_release(source)
    cut = day_start(start)
    before = ratings[ratings["timestamp"] < cut]
    if before.empty or start > last_day(ratings):
        raise DataError(
            f"start {start} leaves nothing to replay: {source} holds ratings from "
            f"{datetime.fromtimestamp(int(ratings['timestamp'].min()), UTC).date()} to {last_day(ratings)}"
        )
    shutil.rmtree(out, ignore_errors=True)
    release, events = out / "release", out / "events"
    release.mkdir(parents=True)
    events.mkdir()
    first_rated = ratings.groupby("movieId")["timestamp"].min()
    known = movies[~movies["movieId"].isin(first_rated[first_rated >= cut].index)]
    before.to_csv(release / "ratings.csv", index=False)
    known.to_csv(release / "movies.csv", index=False)
    if (Path(source) / "README.txt").is_file():
        shutil.copyfile(Path(source) / "README.txt", release / "README.txt")
    return Stream(
        release, [_step(ratings, movies, first_rated, start, i, step_days, events) for i in range(steps)]
    )


def _step(
    ratings: pd.DataFrame,
    movies: pd.DataFrame,
    first_rated: pd.Series,
    start: date,
    index: int,
    step_days: int,
    events: Path,
) -> tuple[date, Path, Path | None]:
    """One step's event files: the ratings of its days, and the movies first rated in them."""
    day = start + timedelta(days=index * step_days)
    low, high = day_start(day), day_start(day) + step_days * DAY_S
    ratings_path = events / f"{day.isoformat()}.csv"
    ratings[(ratings["timestamp"] >= low) & (ratings["timestamp"] < high)].to_csv(ratings_path, index=False)
    new = first_rated[(first_rated >= low) & (first_rated < high)].index
    if not len(new):
        return day, ratings_path, None
    movies_path = events / f"{day.isoformat()}.movies.csv"
    movies[movies["movieId"].isin(new)].to_csv(movies_path, index=False)
    return day, ratings_path, movies_path
