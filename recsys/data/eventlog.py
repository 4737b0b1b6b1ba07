"""The event log of a raw snapshot: each night's events, kept beside the release they follow.

```
raw/<dataset>/ratings.csv movies.csv     the release, as ingested
              release.json               {"release_id"}: md5 of the release's ratings and movies
              events/000001/             one night: ratings.parquet, movies.parquet, night.json
```

The snapshot is the release plus every night in order, read with one rule (:func:`merge`): for each
(user, movie) the rating with the latest timestamp wins, and of equal timestamps the later night,
so a re-rating replaces the old rating and a late event older than the rating in place changes
nothing. :func:`take` applies the rule to a delivery before anything is written, so a night's
``ratings.parquet`` holds only what changes the snapshot (new ratings and re-ratings); repeats and
superseded rows are dropped and counted. ``night.json`` is written into the night's folder before
the folder is renamed into ``events/``, so a night is in the log whole or not at all; it records
the source's cursor (the watermark the next night reads from), the counts and the event-time
watermark (the latest timestamp in the snapshot).

The DVC version of ``raw/<dataset>`` changes with each night, so every night is a data version.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.data.events import MOVIE_COLUMNS, RATING_COLUMNS, Delivery
from recsys.errors import DataError
from recsys.files import md5 as file_md5
from recsys.files import read_parquet, write_text

RELEASE_FILE = "release.json"
EVENTS = "events"
NIGHT_FILE = "night.json"
PREPARE_AGAIN = "run `recsys prepare` again"
PAIR = ["user_id", "movie_id"]


def release_id(raw: Path) -> str:
    """The release's id (release.json; computed from the files for a snapshot that predates it)."""
    path = Path(raw) / RELEASE_FILE
    if path.is_file():
        return str(json.loads(path.read_text())["release_id"])
    return compute_release_id(raw)


def compute_release_id(raw: Path) -> str:
    """md5 over the release's ratings.csv and movies.csv (their content, not their times)."""
    return file_md5(Path(raw) / "ratings.csv", Path(raw) / "movies.csv")


def write_release_id(raw: Path) -> str:
    """Write release.json into a staged release folder; returns the id."""
    rid = compute_release_id(raw)
    (Path(raw) / RELEASE_FILE).write_text(json.dumps({"release_id": rid}) + "\n")
    return rid


def nights(raw: Path) -> list[dict[str, Any]]:
    """Every complete night of the log (its night.json, with ``folder``), in order."""
    root = Path(raw) / EVENTS
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
        if (folder / NIGHT_FILE).is_file():
            out.append({**json.loads((folder / NIGHT_FILE).read_text()), "folder": str(folder)})
    return out


def last_seq(raw: Path) -> int:
    """The sequence number of the latest night (0: none yet)."""
    found = nights(raw)
    return int(found[-1]["seq"]) if found else 0


def night_id(raw: Path, seq: int) -> str:
    """The id of night ``seq`` ("" for 0, the release alone, and for a night not in the log): a
    release taken again starts a new log, whose nights have new ids."""
    return next((str(n.get("night_id", "")) for n in nights(raw) if int(n["seq"]) == seq), "")


def _with_order(frame: pd.DataFrame, seq: int) -> pd.DataFrame:
    return frame[RATING_COLUMNS].assign(seq=np.int64(seq))


def ratings_after(
    raw: Path, seq: int, users: np.ndarray | None = None, until: int | None = None
) -> pd.DataFrame:
    """The ratings of the nights after ``seq`` up to ``until`` (default: the last), of ``users`` only
    if given, with their ``seq``."""
    frames = []
    for night in nights(raw):
        if seq < int(night["seq"]) <= (until if until is not None else int(night["seq"])):
            frame = read_parquet(Path(night["folder"]) / "ratings.parquet", fix="ingest the night again")
            if users is not None:
                frame = frame[frame["user_id"].isin(users)]
            frames.append(_with_order(frame, int(night["seq"])))
    if not frames:
        return _with_order(_empty(), 0)
    return pd.concat(frames, ignore_index=True)


def _empty() -> pd.DataFrame:
    dtypes = {"user_id": "int64", "movie_id": "int64", "rating": "float64", "timestamp": "int64"}
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})


def merge(base: pd.DataFrame, later: pd.DataFrame) -> pd.DataFrame:
    """The log's rule: per (user, movie) the latest timestamp wins, then the later night.

    ``base`` (seq 0) and ``later`` (with ``seq``) hold RATING_COLUMNS. Returns RATING_COLUMNS ordered
    by user, timestamp and movie (the order of the prepared activity).
    """
    if later.empty:  # no copy of the columns when they are the ones asked for (20M rows: seconds)
        both = base if list(base.columns) == list(RATING_COLUMNS) else base[RATING_COLUMNS]
    else:
        stacked = pd.concat([_with_order(base, 0), later], ignore_index=True)
        stacked = _sorted(stacked, [*PAIR, "timestamp", "seq"])
        both = stacked.drop_duplicates(PAIR, keep="last")[RATING_COLUMNS]
    ordered = _sorted(both, ["user_id", "timestamp", "movie_id"])
    if not isinstance(ordered.index, pd.RangeIndex) or ordered.index.start != 0 or ordered.index.step != 1:
        ordered = ordered.reset_index(drop=True)
    return ordered.astype({"user_id": "int64", "movie_id": "int64"}, copy=False)


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``frame`` in the stable order of its integer columns ``keys``: as it is when it already is
    (a prepared activity is; one pass to tell), else by numpy's lexsort (a pandas multi-key sort
    of 20M rows takes ~40 s, this ~3 s)."""
    columns = [frame[k].to_numpy() for k in keys]
    if len(frame) < 2:
        return frame
    ahead = np.zeros(len(frame) - 1, dtype=bool)  # row i + 1 is after row i by an earlier key
    tied = np.ones(len(frame) - 1, dtype=bool)  # rows i and i + 1 equal on the keys so far
    for values in columns:
        step = np.diff(values)
        ahead |= tied & (step > 0)
        tied &= step == 0
    if (ahead | tied).all():
        return frame
    return frame.iloc[np.lexsort(columns[::-1])]


def movies_after(raw: Path, seq: int = 0) -> pd.DataFrame:
    """Movies added by the nights after ``seq`` (a later night's row wins)."""
    frames = [
        read_parquet(Path(n["folder"]) / "movies.parquet", fix="ingest the night again")
        for n in nights(raw)
        if int(n["seq"]) > seq
    ]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in MOVIE_COLUMNS})
    return pd.concat(frames, ignore_index=True).drop_duplicates("movie_id", keep="last")


def with_added_movies(movies: pd.DataFrame, added: pd.DataFrame) -> pd.DataFrame:
    """The release's movies plus additions (an added row replaces the release's row)."""
    if added.empty:
        return movies
    kept = movies[~movies["movie_id"].isin(added["movie_id"])]
    return pd.concat([kept, added[MOVIE_COLUMNS]], ignore_index=True).sort_values(
        "movie_id", ignore_index=True
    )


def current_movies(raw: Path, tags: bool = True) -> pd.DataFrame:
    """The snapshot's movies: the release's with the additions of its nights, and (``tags``) each
    movie's user tags from the release's tags.csv when it has one (recsys.data.prepared.with_tags)."""
    from recsys.data.prepared import load_movies, load_tags, with_tags

    movies = with_added_movies(load_movies(Path(raw) / "movies.csv"), movies_after(Path(raw)))
    return with_tags(movies, load_tags(Path(raw) / "tags.csv")) if tags else movies


def take(
    delivery: Delivery, current: Callable[[np.ndarray], pd.DataFrame], event_watermark: int
) -> tuple[pd.DataFrame, dict[str, int]]:
    """What a delivery changes: its rows that :func:`merge` would let win, and the counts.

    ``current(users)`` returns the snapshot's ratings of those users; ``event_watermark`` is the
    snapshot's latest timestamp. Counts: ``delivered``; ``duplicates`` (a row repeated in the
    delivery, or already in the snapshot as is); ``superseded`` (a rating older than one for the
    same movie by the same user, in the delivery or the snapshot); ``rerated`` and ``new`` (kept);
    ``late`` (kept rows timestamped before the event watermark); ``users`` (whose ratings change).
    """
    rows = delivery.ratings.astype({"user_id": "int64", "movie_id": "int64", "timestamp": "int64"})
    rows = rows.astype({"rating": "float64"})
    delivered = len(rows)
    unique = rows.drop_duplicates(RATING_COLUMNS)
    repeats = delivered - len(unique)
    latest = unique.sort_values([*PAIR, "timestamp"], kind="mergesort").drop_duplicates(PAIR, keep="last")
    superseded = len(unique) - len(latest)
    before = current(latest["user_id"].unique())[RATING_COLUMNS]
    joined = latest.merge(before, on=PAIR, how="left", suffixes=("", "_now"))
    exists = joined["rating_now"].notna().to_numpy()
    same = (
        exists
        & (joined["rating"] == joined["rating_now"]).to_numpy()
        & (joined["timestamp"] == joined["timestamp_now"]).to_numpy()
    )
    older = exists & ~same & (joined["timestamp"] <= joined["timestamp_now"]).to_numpy()
    keep = ~same & ~older
    kept = joined.loc[keep, RATING_COLUMNS].sort_values(
        ["user_id", "timestamp", "movie_id"], ignore_index=True
    )
    counts = {
        "delivered": delivered,
        "duplicates": repeats + int(same.sum()),
        "superseded": superseded + int(older.sum()),
        "rerated": int((keep & exists).sum()),
        "new": int((keep & ~exists).sum()),
        "late": int((kept["timestamp"] < event_watermark).sum()),
        "users": int(kept["user_id"].nunique()),
    }
    return kept, counts


def write_night(
    raw: Path, ratings: pd.DataFrame, movies: pd.DataFrame, record: dict[str, Any], staging: Path
) -> dict:
    """Add a night to the log: written in ``staging`` (a folder DVC ignores, on the same file
    system), then renamed into ``events/`` whole. Returns its night.json record."""
    root = Path(raw) / EVENTS
    root.mkdir(parents=True, exist_ok=True)
    staging.mkdir(parents=True, exist_ok=True)
    seq = last_seq(raw) + 1
    staged = Path(tempfile.mkdtemp(prefix="night-", dir=staging))
    try:
        ratings[RATING_COLUMNS].to_parquet(staged / "ratings.parquet", index=False)
        movies[MOVIE_COLUMNS].to_parquet(staged / "movies.parquet", index=False)
        taken_at = datetime.now(UTC).isoformat(timespec="seconds")
        night = {"seq": seq, "night_id": uuid.uuid4().hex, "taken_at": taken_at, **record}
        write_text(json.dumps(night, indent=2, default=str) + "\n", staged / NIGHT_FILE)
        target = root / f"{seq:06d}"
        staged.rename(target)
    except OSError as exc:
        raise DataError(f"cannot write night {seq} into {root}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return {**night, "folder": str(target)}


def prepared_base(raw: Path, prepared: Path) -> tuple[Path | None, int]:
    """(the prepared activity, the last night it includes) when ``prepared`` was made from this
    release's log; (None, 0) otherwise, and the release's ratings.csv is the base to read."""
    try:
        meta = json.loads((Path(prepared) / "meta.json").read_text())
    except (OSError, ValueError):
        return None, 0
    activity = Path(prepared) / "activity.parquet"
    if meta.get("release_id") != release_id(raw) or "events_seq" not in meta or not activity.is_file():
        return None, 0
    if int(meta["events_seq"]) > last_seq(raw):  # prepared from a log that was since replaced
        return None, 0
    return activity, int(meta["events_seq"])


def changed_users(raw: Path, since: int, until: int) -> np.ndarray:
    """The users whose ratings the nights after ``since`` up to ``until`` changed, ascending."""
    return np.unique(ratings_after(raw, since, until=until)["user_id"].to_numpy(dtype=np.int64))


def current_ratings(
    raw: Path,
    users: np.ndarray | None = None,
    activity: Path | None = None,
    since: int = 0,
    until: int | None = None,
) -> pd.DataFrame:
    """The snapshot's ratings (of ``users`` only, if given) as of night ``until`` (default: the last),
    by the rule of :func:`merge`.

    The base is ``activity`` (a prepared activity that includes the nights up to ``since``, see
    :func:`prepared_base`) when given, else the release's ratings.csv; the later nights go on top.
    """
    if users is not None:
        users = np.unique(np.asarray(users, dtype=np.int64))
        if not len(users):
            return _empty()
    if activity is not None and until is not None and until < since:
        activity = None  # the prepared activity holds nights after the one asked for
    if activity is not None:
        filters = [("user_id", "in", users.tolist())] if users is not None else None
        base = read_parquet(activity, RATING_COLUMNS, PREPARE_AGAIN, filters)
    else:
        from recsys.data.prepared import load_ratings

        base, since = load_ratings(Path(raw) / "ratings.csv"), 0
        if users is not None:
            base = base[base["user_id"].isin(users)]
    return merge(base, ratings_after(raw, since, users, until))
