"""Load MovieLens releases and prepare them by the evaluation protocol of DESIGN.md.

Both ml-latest-small and ml-20m share one CSV layout (ratings.csv: userId,movieId,rating,timestamp;
movies.csv: movieId,title,genres), so one loader reads either.

Prepared data product (one folder): ``interactions.parquet`` (every kept positive with its split),
``catalogue.parquet`` (train items with ``item_idx``), ``tail.parquet`` (the other rated movies,
with titles, genres and tags), ``users.parquet`` (``user_idx`` map),
``activity.parquet`` (every rating of every user, unfiltered, ordered by user, time and movie: the
nightly scoring builds each user's history and seen set from it, so lists follow today's data
without a retrain) and ``meta.json`` (counts and the settings that made it).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.config import DataConfig
from recsys.errors import DataError
from recsys.files import read_parquet

log = logging.getLogger(__name__)

RATING_COLUMNS = {"userId": "int64", "movieId": "int64", "rating": "float64", "timestamp": "int64"}
MOVIE_COLUMNS = ["movieId", "title", "genres"]
SPLITS = ("train", "valid", "test")


def load_ratings(path: Path) -> pd.DataFrame:
    """Read ratings.csv into columns user_id, movie_id, rating, timestamp (raises DataError)."""
    if not path.is_file():
        raise DataError(f"ratings file {path} does not exist; run `recsys ingest` first")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot parse {path}: {exc}") from exc
    missing = [c for c in RATING_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing}; expected {list(RATING_COLUMNS)}")
    return frame[list(RATING_COLUMNS)].rename(columns={"userId": "user_id", "movieId": "movie_id"})


def load_movies(path: Path) -> pd.DataFrame:
    """Read movies.csv into columns movie_id, title, genres (raises DataError)."""
    if not path.is_file():
        raise DataError(f"movies file {path} does not exist; run `recsys ingest` first")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot parse {path}: {' '.join(str(exc).split())}") from exc
    missing = [c for c in MOVIE_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing}; expected {MOVIE_COLUMNS}")
    return frame[MOVIE_COLUMNS].rename(columns={"movieId": "movie_id"})


def load_tags(path: Path) -> pd.DataFrame:
    """Read tags.csv (userId,movieId,tag,timestamp) into columns movie_id, tag, timestamp; an empty
    frame when the release has none (DataError when it cannot be read)."""
    columns = {"movie_id": "int64", "tag": "object", "timestamp": "int64"}
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})
    try:
        frame = pd.read_csv(path, dtype={"tag": str}, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot parse {path}: {' '.join(str(exc).split())}") from exc
    missing = [c for c in ("movieId", "tag", "timestamp") if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing}; expected userId,movieId,tag,timestamp")
    return frame.rename(columns={"movieId": "movie_id"})[list(columns)]


def with_tags(movies: pd.DataFrame, tags: pd.DataFrame, before: int | None = None) -> pd.DataFrame:
    """``movies`` with a ``tags`` column (pipe-separated, recsys.data.features.movie_tags) from the
    tags given before the timestamp ``before`` (all of them when None)."""
    from recsys.data.features import movie_tags

    if before is not None:
        tags = tags[tags["timestamp"] < before]
    return movies.assign(tags=movies["movie_id"].map(movie_tags(tags)).fillna("").astype(str))


def filter_positives(ratings: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """Protocol steps 1-2: positives, then one cold-start pass counted over all positives."""
    pos = ratings[ratings["rating"] >= cfg.rating_threshold]
    user_n = pos.groupby("user_id")["movie_id"].transform("size")
    item_n = pos.groupby("movie_id")["user_id"].transform("size")
    keep = (user_n >= cfg.min_user_interactions) & (item_n >= cfg.min_item_interactions)
    return pos[keep].reset_index(drop=True)


def split_by_time(positives: pd.DataFrame) -> pd.DataFrame:
    """Protocol steps 3-4: per user, latest -> test, one before -> valid, rest -> train.

    Ties on timestamp are broken by movie_id. Users with <= 2 positives stay wholly in train.
    Returns the positives with a ``split`` column.
    """
    ordered = positives.sort_values(["user_id", "timestamp", "movie_id"], kind="mergesort")
    ordered = ordered.reset_index(drop=True)
    from_end = ordered.groupby("user_id").cumcount(ascending=False)
    size = ordered.groupby("user_id")["movie_id"].transform("size")
    split = np.where(from_end == 0, "test", np.where(from_end == 1, "valid", "train"))
    ordered["split"] = np.where(size <= 2, "train", split)
    return ordered


def index_splits(split: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Protocol step 5: id maps from train; a held-out row whose item is not in train keeps
    ``item_idx == -1`` (it cannot be ranked, so it counts as a miss).

    Returns (interactions with user_idx/item_idx, users map, items map), indices dense from 0 in
    ascending id order.
    """
    train = split[split["split"] == "train"]
    user_ids = np.sort(train["user_id"].unique())
    movie_ids = np.sort(train["movie_id"].unique())
    users = pd.DataFrame({"user_idx": np.arange(len(user_ids)), "user_id": user_ids})
    items = pd.DataFrame({"item_idx": np.arange(len(movie_ids)), "movie_id": movie_ids})
    out = split.merge(users, on="user_id").merge(items, on="movie_id", how="left")
    out["item_idx"] = out["item_idx"].fillna(-1).astype(np.int64)
    out = out.sort_values(["user_idx", "timestamp", "movie_id"], kind="mergesort")
    cols = ["user_id", "movie_id", "user_idx", "item_idx", "rating", "timestamp", "split"]
    return out[cols].reset_index(drop=True), users, items


@dataclass
class Prepared:
    """The prepared data product, in memory."""

    interactions: pd.DataFrame
    catalogue: pd.DataFrame
    users: pd.DataFrame
    activity: pd.DataFrame
    meta: dict
    # the movies rated in the activity but outside the catalogue (below the cold-start filter), with
    # their titles, genres and tags: what a content item tower trains against (model.tail_negatives)
    tail: pd.DataFrame | None = None

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.catalogue)

    def split(self, name: str) -> pd.DataFrame:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return self.interactions[self.interactions["split"] == name]


@dataclass(frozen=True)
class PreparedRef:
    """Which prepared data a run works on: its folder, its DVC version and the id ``prepare`` wrote
    into its meta.json.

    Located (or pinned) once at the start of a run and passed on, through XCom as
    :meth:`as_dict`; :meth:`check` raises DataError when the folder's content moved away from the
    pinned one (a new prepare landed mid-run). The DVC version is recorded just after the folder
    is swapped in, so the id is checked too: together they catch any such landing.
    """

    folder: Path
    data_version: str
    prepared_id: str = ""

    @classmethod
    def at(cls, folder: Path | str) -> PreparedRef:
        """The prepared data now in ``folder`` (DataError when it is not tracked by DVC)."""
        from recsys.data.snapshots import data_version

        folder = Path(folder)
        try:
            prepared_id = str(json.loads((folder / "meta.json").read_text()).get("prepared_id", ""))
        except (OSError, ValueError):
            prepared_id = ""
        return cls(folder, data_version(folder), prepared_id)

    @classmethod
    def from_dict(cls, pinned: dict) -> PreparedRef:
        """A reference from :meth:`as_dict` (as a task receives it through XCom)."""
        return cls(
            Path(pinned["prepared_dir"]), str(pinned["data_version"]), str(pinned.get("prepared_id") or "")
        )

    def as_dict(self) -> dict[str, str]:
        return {
            "prepared_dir": str(self.folder),
            "data_version": self.data_version,
            "prepared_id": self.prepared_id,
        }

    def check(self) -> PreparedRef:
        """``self`` when the folder still holds the pinned content; DataError otherwise."""
        now = PreparedRef.at(self.folder)
        if now.data_version != self.data_version or (
            self.prepared_id and now.prepared_id != self.prepared_id
        ):
            raise DataError(
                f"prepared data in {self.folder} is now version {now.data_version} ({now.prepared_id}), "
                f"not the pinned {self.data_version} ({self.prepared_id}): a new ingest landed during "
                "this run; run the scoring again"
            )
        return self

    def load(self) -> Prepared:
        """The prepared data in memory (DataError when the folder is incomplete)."""
        return load_prepared(self.folder)


def prepare(ratings: pd.DataFrame, movies: pd.DataFrame, cfg: DataConfig) -> Prepared:
    """Run protocol steps 1-5 and build the catalogue and serving exclusions."""
    positives = filter_positives(ratings, cfg)
    if positives.empty:
        raise DataError("no positives survive the rating threshold and cold-start filter")
    return assemble(split_by_time(positives), movies, ratings, cfg)


def assemble(labelled: pd.DataFrame, movies: pd.DataFrame, ratings: pd.DataFrame, cfg: DataConfig,
             **meta: object) -> Prepared:  # fmt: skip
    """Protocol step 5 and the data product from positives labelled with their ``split``: the
    id maps, the catalogue of train items with their counts and titles, ``ratings`` as the activity,
    and the counts in ``meta`` (beside the protocol's own ``meta``)."""
    interactions, users, items = index_splits(labelled)
    train = interactions[interactions["split"] == "train"]
    counts = train.groupby("item_idx").size().rename("train_count").reset_index()
    catalogue = items.merge(movies, on="movie_id", how="left").merge(counts, on="item_idx")
    catalogue["title"] = catalogue["title"].fillna(catalogue["movie_id"].map("movie {}".format))
    catalogue["genres"] = catalogue["genres"].fillna("(no genres listed)")
    if "tags" in catalogue:
        catalogue["tags"] = catalogue["tags"].fillna("").astype(str)
    activity = ratings.sort_values(["user_id", "timestamp", "movie_id"], kind="mergesort")
    unknown = interactions["item_idx"] < 0
    meta = {
        **meta,
        "n_users": len(users),
        "n_items": len(items),
        **{f"n_{s}": int((interactions["split"] == s).sum()) for s in SPLITS},
        **{f"n_{s}_unknown_items": int((unknown & (interactions["split"] == s)).sum()) for s in SPLITS[1:]},
        "n_activity_users": int(ratings["user_id"].nunique()),
        "n_activity_ratings": len(ratings),
        "settings": cfg.model_dump(mode="json", exclude={"source"}),
    }
    log.info("prepared %s", {k: v for k, v in meta.items() if k != "settings"})
    rated = movies["movie_id"].isin(ratings["movie_id"].unique()) & ~movies["movie_id"].isin(
        items["movie_id"]
    )
    tail = movies[rated].sort_values("movie_id", kind="mergesort").reset_index(drop=True)
    meta["n_tail"] = len(tail)
    return Prepared(interactions, catalogue, users, activity.reset_index(drop=True), meta, tail)


def save_prepared(prepared: Prepared, folder: Path) -> None:
    """Write the prepared data product into ``folder`` (created if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    prepared.interactions.to_parquet(folder / "interactions.parquet", index=False)
    prepared.catalogue.to_parquet(folder / "catalogue.parquet", index=False)
    prepared.users.to_parquet(folder / "users.parquet", index=False)
    prepared.activity.to_parquet(folder / "activity.parquet", index=False)
    if prepared.tail is not None:
        prepared.tail.to_parquet(folder / "tail.parquet", index=False)
    (folder / "meta.json").write_text(json.dumps(prepared.meta, indent=2, sort_keys=True))


def load_prepared(folder: Path) -> Prepared:
    """Read a prepared data product written by :func:`save_prepared` (raises DataError)."""
    names = ["interactions", "catalogue", "users", "activity"]
    missing = [n for n in names if not (folder / f"{n}.parquet").is_file()]
    if missing or not (folder / "meta.json").is_file():
        raise DataError(
            f"prepared data in {folder} is incomplete (missing {missing or ['meta.json']}); "
            "run `recsys prepare` first"
        )
    frames = {n: read_parquet(folder / f"{n}.parquet", fix="run `recsys prepare` again") for n in names}
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{folder / 'meta.json'} is not valid JSON ({exc}); run `recsys prepare` again"
        ) from exc
    tail = None
    if (folder / "tail.parquet").is_file():  # prepared data written before the content tower has none
        tail = read_parquet(folder / "tail.parquet", fix="run `recsys prepare` again")
    return Prepared(**frames, meta=meta, tail=tail)


def left_pad(sequences: list[np.ndarray], length: int, pad: int) -> np.ndarray:
    """The last ``length`` items of each sequence, right-aligned: -> [len(sequences), length].

    The history layout of every user tower (training, evaluation, export and serving).
    """
    out = np.full((len(sequences), length), pad, dtype=np.int64)
    for row, seq in enumerate(sequences):
        recent = seq[-length:]
        if len(recent):
            out[row, length - len(recent) :] = recent
    return out
