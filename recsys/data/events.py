"""Event sources: where each day's ratings come from, and what has been taken from them already.

A source delivers the ratings (and optional movie additions) that are new since its **cursor**, the
watermark the event log (recsys.data.eventlog) records with each night it takes in:

- :class:`FolderSource` (the default, ``$RECSYS_HOME/events``): dated files an export job drops,
  ``YYYY-MM-DD.csv`` or ``.parquet`` with MovieLens columns ``userId,movieId,rating,timestamp``,
  and ``YYYY-MM-DD.movies.csv`` (or ``.parquet``; ``movieId,title,genres``) for movies new that day.
  Its cursor is the set of files taken (name -> md5): a file dropped late, for a day already taken,
  is still taken, and a file rewritten after it was taken is taken again (its repeats are
  duplicates, which the log drops).
- :class:`SqlSource` (``postgresql://...``, ``sqlite:///...``): the application's ratings table, read
  through SQLAlchemy, with an increasing column the application assigns on insert (``events.cursor``,
  default ``id``). Its cursor is the largest value taken: a rating inserted late with an old
  timestamp is still above it, so it is taken (and counted late), never skipped.

Ratings come back with recsys's column names (user_id, movie_id, rating, timestamp), movies with
movie_id, title, genres. Nothing here writes anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from recsys.config import Settings
from recsys.errors import DataError, IngestError
from recsys.files import md5 as file_md5

RATING_NAMES = {"userId": "user_id", "movieId": "movie_id"}  # MovieLens -> recsys; snake_case passes
RATING_COLUMNS = ["user_id", "movie_id", "rating", "timestamp"]
MOVIE_COLUMNS = ["movie_id", "title", "genres"]
DATED = re.compile(r"^(?P<day>\d{4}-\d{2}-\d{2})(?P<movies>\.movies)?\.(?P<ext>csv|parquet)$")


@dataclass
class Delivery:
    """What a source holds beyond a cursor: the raw rows, as delivered, and the cursor after them."""

    ratings: pd.DataFrame  # RATING_COLUMNS, as delivered (not deduplicated, not yet validated)
    movies: pd.DataFrame  # MOVIE_COLUMNS: movies new with these events (often empty)
    cursor: dict[str, Any]  # the source's watermark once these rows are taken
    parts: list[str] = field(default_factory=list)  # what was read: file names, or "id > N"
    watermark: str = ""  # for people: the last day (files) or the last cursor value (SQL)

    @property
    def empty(self) -> bool:
        return self.ratings.empty and self.movies.empty


class Source(Protocol):
    """An event source: :meth:`read` delivers everything beyond ``cursor`` (None: from the start)."""

    description: str  # for messages: the folder, or the URL with its password masked

    def read(self, cursor: dict[str, Any] | None) -> Delivery: ...


def _ratings_frame(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    frame = frame.rename(columns=RATING_NAMES)
    if missing := [c for c in RATING_COLUMNS if c not in frame.columns]:
        raise DataError(f"{where} lacks column(s) {missing}; expected userId,movieId,rating,timestamp")
    return frame[RATING_COLUMNS].reset_index(drop=True)


def _movies_frame(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    frame = frame.rename(columns={"movieId": "movie_id"})
    if missing := [c for c in MOVIE_COLUMNS if c not in frame.columns]:
        raise DataError(f"{where} lacks column(s) {missing}; expected movieId,title,genres")
    return frame[MOVIE_COLUMNS].reset_index(drop=True)


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except Exception as exc:  # noqa: BLE001 - pandas and pyarrow raise many kinds; name the file
        raise DataError(f"cannot read event file {path}: {' '.join(str(exc).split())[:200]}") from exc


class FolderSource:
    """Dated event files in a folder (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.description = str(self.folder)

    def files(self) -> list[Path]:
        """The dated files in the folder, oldest day first (ratings before movies of one day)."""
        if not self.folder.is_dir():
            return []
        found = [p for p in self.folder.iterdir() if p.is_file() and DATED.match(p.name)]
        return sorted(found, key=lambda p: (p.name[:10], ".movies." in p.name, p.name))

    def read(self, cursor: dict[str, Any] | None) -> Delivery:
        if not self.folder.is_dir():
            raise DataError(
                f"event folder {self.folder} does not exist; create it and drop YYYY-MM-DD.csv files "
                "there, or set events.source"
            )
        taken = dict((cursor or {}).get("files", {}))
        ratings, movies, parts = [], [], []
        for path in self.files():
            md5 = file_md5(path)
            if taken.get(path.name) == md5:
                continue
            frame = _read_table(path)
            if ".movies." in path.name:
                movies.append(_movies_frame(frame, str(path)) if len(frame.columns) else None)
            else:
                ratings.append(_ratings_frame(frame, str(path)) if len(frame.columns) else None)
            taken[path.name] = md5
            parts.append(path.name)
        days = sorted(DATED.match(name)["day"] for name in taken)  # type: ignore[index]
        return Delivery(
            _concat([r for r in ratings if r is not None], RATING_COLUMNS),
            _concat([m for m in movies if m is not None], MOVIE_COLUMNS),
            {"files": taken},
            parts,
            days[-1] if days else "",
        )


class SqlSource:
    """The application's ratings table, through SQLAlchemy (see the module docstring)."""

    def __init__(self, url: str, table: str, cursor_column: str, description: str) -> None:
        self.url, self.table, self.cursor_column = url, table, cursor_column
        self.description = description

    def read(self, cursor: dict[str, Any] | None) -> Delivery:
        import sqlalchemy as sa

        after = int((cursor or {}).get("sql_cursor", -(2**62)))
        try:
            engine = sa.create_engine(self.url)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
            raise DataError(
                f"events.source {self.description} is not a usable SQLAlchemy URL: {exc}"
            ) from None
        try:
            with engine.connect() as conn:
                table = sa.Table(self.table, sa.MetaData(), autoload_with=conn)
                if self.cursor_column not in table.c:
                    raise DataError(
                        f"table {self.table!r} at {self.description} has no column {self.cursor_column!r} "
                        "(events.cursor): an increasing id the application assigns on insert"
                    )
                key = table.c[self.cursor_column]
                query = sa.select(table).where(key > after).order_by(key)
                frame = pd.read_sql(query, conn)
        except sa.exc.NoSuchTableError:
            raise DataError(f"no table {self.table!r} at {self.description} (events.table)") from None
        except sa.exc.SQLAlchemyError as exc:
            reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
            raise IngestError(f"cannot read events from {self.description}: {reason}") from exc
        finally:
            engine.dispose()
        last = int(frame[self.cursor_column].max()) if len(frame) else after
        ratings = (
            _ratings_frame(frame, f"table {self.table!r} at {self.description}")
            if len(frame)
            else (_concat([], RATING_COLUMNS))
        )
        part = [f"{self.table}.{self.cursor_column} > {after}"] if len(frame) else []
        return Delivery(ratings, _concat([], MOVIE_COLUMNS), {"sql_cursor": last}, part, str(last))


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """The frames' rows in order. A file with a header and no rows (a quiet day) reads as object
    columns, which would turn every column of the delivery into objects: it adds nothing, so it is
    left out."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    return pd.concat(frames, ignore_index=True)


def open_source(settings: Settings, override: str | None = None) -> Source:
    """The event source of ``events.source`` (or ``override``): a SQLAlchemy URL or a folder."""
    from recsys.redaction import redact

    spec = override if override is not None else settings.events_source
    if "://" in spec:
        return SqlSource(spec, settings.events.table, settings.events.cursor, redact(spec))
    inbox = (settings.paths.home / "events").resolve()
    if Path(spec).resolve() == inbox:
        inbox.mkdir(parents=True, exist_ok=True)  # the default folder: empty until an export drops files
    return FolderSource(Path(spec))
