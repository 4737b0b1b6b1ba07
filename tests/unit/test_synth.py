"""The synthetic MovieLens-shaped generator: layout, statistics, determinism, planted signal, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.cli import main
from recsys.config import DataConfig
from recsys.data.prepared import load_movies, load_ratings, load_tags, prepare
from recsys.data.synth import release as synth_release
from recsys.data.synth.catalogue import Release, activity
from recsys.data.synth.generate import generate
from recsys.data.synth.params import (
    END,
    FILLER_WORDS,
    GENERIC_TAGS,
    GENRES,
    HALF_STARS_FROM,
    MIN_PER_USER,
    NO_GENRES,
    STARS,
    START,
    VERSION,
    SynthParams,
    params_for,
)
from recsys.data.synth.release import synthesize
from recsys.data.views import seen_lists
from recsys.errors import ConfigError, DataError
from recsys.evaluation.baselines import MostPop
from recsys.evaluation.metrics import evaluate

pytestmark = pytest.mark.unit

TINY = SynthParams(users=300, movies=400, ratings=30_000, seed=3)


@pytest.fixture(scope="module")
def release() -> Release:
    return generate(SynthParams(users=1_500, movies=1_200, ratings=150_000, seed=1))


@pytest.fixture(scope="module")
def frame(release: Release) -> pd.DataFrame:
    return pd.DataFrame(release.ratings)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_presets_and_overrides() -> None:
    assert params_for("ml-20m") == SynthParams(138_493, 26_744, 20_000_263, 0)
    assert params_for("small", ratings=200_000, seed=7) == SynthParams(6_040, 3_706, 200_000, 7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"users": 0}, "users >= 1"),
        ({"movies": 19}, "movies >= 20"),
        ({"users": 100, "movies": 500, "ratings": 1_999}, r"ratings must be in 2,000..17,500"),
        ({"users": 10, "movies": 100, "ratings": 400}, r"ratings must be in 200..350"),
        ({"users": 10, "movies": 1_000, "ratings": 500}, r"every movie rated"),
        ({"seed": -1}, "seed >= 0"),
    ],
)
def test_impossible_parameters_are_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        params_for("small", **kwargs)


def test_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"'ml-1m'.*\['ml-20m', 'small'\]"):
        params_for("ml-1m")


def test_activity_is_exact_bounded_and_heavy_tailed() -> None:
    params = SynthParams(users=5_000, movies=2_000, ratings=700_000)
    counts = activity(np.random.default_rng(0), params)
    assert counts.sum() == params.ratings
    assert counts.min() == MIN_PER_USER and counts.max() <= params.max_per_user == 700
    assert np.median(counts) < 0.7 * counts.mean() and counts.mean() < 0.25 * counts.max()


def test_release_has_the_movielens_shape(release: Release, frame: pd.DataFrame) -> None:
    params = release.params
    assert len(frame) == params.ratings
    assert not frame.duplicated(["user_id", "movie_id"]).any()
    per_user = frame.groupby("user_id").size()
    assert list(per_user.index) == list(range(1, params.users + 1)) and per_user.min() >= 20
    per_movie = frame.groupby("movie_id").size()
    assert set(per_movie.index) == set(release.catalogue.movie_ids)  # every movie rated
    assert per_movie.max() > 4 * per_movie.median()  # a popular head
    assert frame["movie_id"].max() > 2 * params.movies  # sparse ids, as in the real release
    ordered = frame.sort_values(["user_id", "movie_id"], kind="mergesort")
    assert (ordered.index == frame.index).all()


def test_stars_follow_movielens_histogram(release: Release, frame: pd.DataFrame) -> None:
    assert set(frame["rating"].unique()) <= set(STARS)
    shares = frame["rating"].value_counts(normalize=True)
    assert 0.45 < (frame["rating"] >= 4).mean() < 0.55
    assert shares.idxmax() == 4.0 and shares[4.0] == pytest.approx(0.28, abs=0.03)
    assert shares[3.0] == pytest.approx(0.21, abs=0.03)
    early = frame[frame["timestamp"] < HALF_STARS_FROM]
    assert len(early) and (early["rating"] % 1 == 0).all()  # whole stars before 2003-02-18
    assert release.stats["share_4_or_more"] == pytest.approx((frame["rating"] >= 4).mean(), abs=1e-4)


def test_timestamps_span_years_in_sessions(frame: pd.DataFrame) -> None:
    ts = frame["timestamp"]
    assert ts.min() >= START and ts.max() < END
    assert pd.to_datetime(ts, unit="s").dt.year.nunique() >= 15
    timed = frame.sort_values(["user_id", "timestamp"], kind="mergesort")
    gaps = timed.groupby("user_id")["timestamp"].diff().dropna()
    assert (gaps >= 0).all()
    assert (gaps < 600).mean() > 0.7  # most ratings minutes apart inside a session
    assert (gaps > 86_400).mean() > 0.02  # sessions days or more apart
    span = timed.groupby("user_id")["timestamp"].agg(lambda t: t.max() - t.min())
    assert (span > 365 * 86_400).mean() > 0.05 and (span < 86_400).mean() > 0.2


def test_movies_carry_movielens_genres_tied_to_clusters(release: Release) -> None:
    cat = release.catalogue
    assert len(cat.titles) == len(cat.genres) == len(cat.movie_ids) == release.params.movies
    assert all(t.endswith(f" ({y})") and len(t) > 7 for t, y in zip(cat.titles, cat.years.tolist()))
    names = {g for genres in cat.genres for g in genres.split("|")}
    assert names <= set(GENRES) | {NO_GENRES} and len(names) > 10
    flags = pd.Series(cat.genres).str.get_dummies(sep="|")
    shared = flags.groupby(cat.clusters).mean().max(axis=1)  # movies with the cluster's top genre
    assert shared.min() > 0.9 and flags.mean().max() < 0.6


def _pairs_in_one_cluster(groups: pd.Series, clusters: pd.Series) -> float:
    """Of the pairs of movies that share an entry of ``groups`` (movie_id -> word or tag), the
    share in one cluster."""
    frame = pd.DataFrame({"key": groups.to_numpy(), "cluster": clusters[groups.index].to_numpy()})
    sizes = frame.groupby("key").size()
    same = frame.groupby(["key", "cluster"]).size()
    pairs = (sizes * (sizes - 1) / 2).sum()
    return float((same * (same - 1) / 2).sum() / pairs)


def test_titles_and_tags_carry_the_clusters(release: Release, frame: pd.DataFrame) -> None:
    """Movies that share a made-up title word or tag mostly share a cluster; common words and
    generic tags do not; tags follow ml-20m's counts and come after the ratings they are on."""
    cat = release.catalogue
    clusters = pd.Series(cat.clusters, index=cat.movie_ids)
    chance = float(((clusters.value_counts(normalize=True)) ** 2).sum())
    words = pd.Series([t.rsplit(" (", 1)[0].lower().split() for t in cat.titles], index=cat.movie_ids)
    words = words.explode()
    made_up = words[~words.isin(FILLER_WORDS) & ~words.str.isdigit()]
    assert _pairs_in_one_cluster(made_up, clusters) > 0.95 > 5 * chance
    assert _pairs_in_one_cluster(words[words.isin(FILLER_WORDS)], clusters) < 2 * chance

    tags = pd.DataFrame(release.tags)
    assert list(tags.columns) == ["user_id", "movie_id", "tag", "timestamp"]
    assert len(tags) == release.stats["tags"] and len(tags) / len(frame) == pytest.approx(0.023, rel=0.25)
    assert tags["user_id"].nunique() < 0.1 * release.params.users  # a few users tag
    assert not tags.duplicated(["user_id", "movie_id", "tag"]).any()
    rated = tags.merge(frame, on=["user_id", "movie_id"], suffixes=("", "_rating"))
    assert len(rated) == len(tags) and (rated["timestamp"] >= rated["timestamp_rating"]).all()
    own = tags[~tags["tag"].isin(GENERIC_TAGS)].drop_duplicates(["movie_id", "tag"])
    assert _pairs_in_one_cluster(own.set_index("movie_id")["tag"], clusters) > 0.95
    assert 0.1 < tags["tag"].isin(GENERIC_TAGS).mean() < 0.4


def test_planted_signal_beats_popularity(release: Release, frame: pd.DataFrame) -> None:
    """The held-out last positive follows the user's earlier positives far above chance."""
    cat = release.catalogue
    movies = pd.DataFrame({"movie_id": cat.movie_ids, "title": cat.titles, "genres": cat.genres})
    prep = prepare(frame, movies, DataConfig())
    inter = prep.interactions
    cluster = pd.Series(cat.clusters, index=cat.movie_ids)
    history, test = inter[inter["split"] != "test"], inter[inter["split"] == "test"]
    dominant = (
        cluster[history["movie_id"]]
        .groupby(history["user_id"].to_numpy())
        .agg(lambda c: c.value_counts().index[0])
    )
    hit = (cluster[test["movie_id"]].to_numpy() == dominant[test["user_id"]].to_numpy()).mean()
    chance = (cluster[test["movie_id"]].value_counts(normalize=True) ** 2).sum()
    assert hit > 4 * chance

    item_cluster = cluster[prep.catalogue.sort_values("item_idx")["movie_id"]].to_numpy()
    counts = prep.catalogue.sort_values("item_idx")["train_count"].to_numpy().astype(float)
    share = np.zeros((prep.n_users, item_cluster.max() + 1))
    known = history[history["item_idx"] >= 0]
    np.add.at(share, (known["user_idx"], item_cluster[known["item_idx"]]), 1.0)
    seen = seen_lists(history[["user_idx", "item_idx"]], prep.n_users)
    most_pop = evaluate(MostPop(counts), test, seen)["recall_at_10"]
    cluster_pop = evaluate(lambda u: share[u][:, item_cluster] * counts, test, seen)["recall_at_10"]
    assert cluster_pop > 2 * most_pop


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    first = synthesize(TINY, tmp_path / "a")
    synthesize(TINY, tmp_path / "b")
    synthesize(SynthParams(TINY.users, TINY.movies, TINY.ratings, seed=4), tmp_path / "c")
    a, b, c = (_digests(tmp_path / n) for n in "abc")
    assert list(a) == ["README.txt", "movies.csv", "ratings.csv", "tags.csv"]
    assert a == b
    assert a["ratings.csv"] != c["ratings.csv"]
    assert first["out"] == str(tmp_path / "a") and first["ratings"] == TINY.ratings
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no staging left over


def test_files_read_back_through_the_loader(tmp_path: Path) -> None:
    release = generate(TINY)
    synthesize(TINY, tmp_path / "out")
    text = (tmp_path / "out" / "ratings.csv").read_text()
    assert text.startswith("userId,movieId,rating,timestamp\n1,")
    assert {line.split(",")[2] for line in text.splitlines()[1:]} <= {f"{s:.1f}" for s in STARS}
    ratings = load_ratings(tmp_path / "out" / "ratings.csv")
    assert list(ratings.dtypes) == ["int64", "int64", "float64", "int64"]
    pd.testing.assert_frame_equal(ratings, pd.DataFrame(release.ratings), check_dtype=False)
    movies = load_movies(tmp_path / "out" / "movies.csv")
    assert movies["movie_id"].tolist() == release.catalogue.movie_ids.tolist()
    assert movies["genres"].tolist() == release.catalogue.genres
    assert movies["title"].tolist() == release.catalogue.titles
    tags = load_tags(tmp_path / "out" / "tags.csv")
    assert tags["tag"].tolist() == release.tags["tag"].tolist()
    assert tags["movie_id"].tolist() == release.tags["movie_id"].tolist()
    readme = (tmp_path / "out" / "README.txt").read_text()
    assert "SYNTHETIC" in readme and f"generator version {VERSION}" in readme
    assert "--users 300 --movies 400 --ratings 30000 --seed 3" in readme
    assert '"share_4_or_more"' in readme


def test_out_folder_is_replaced_only_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    synthesize(TINY, out)  # an empty folder is fine
    before = _digests(out)
    with pytest.raises(DataError, match="not empty; pass --force"):
        synthesize(TINY, out)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        synthesize(TINY, tmp_path / "file")

    def broken(release: Release, folder: Path) -> None:
        (folder / "ratings.csv").write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr(synth_release, "write_release", broken)
    with pytest.raises(OSError, match="disk full"):
        synthesize(TINY, out, force=True)
    assert _digests(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "out"]
    monkeypatch.undo()
    other = SynthParams(TINY.users, TINY.movies, TINY.ratings, seed=9)
    synthesize(other, out, force=True)
    assert _digests(out) != before and sorted(p.name for p in tmp_path.iterdir()) == ["file", "out"]


def test_cli_prints_a_json_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "synth",
            "--users",
            "100",
            "--movies",
            "150",
            "--ratings",
            "5000",
            "--seed",
            "2",
            "--out",
            str(tmp_path / "rel"),
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {k: summary[k] for k in ("users", "movies", "ratings", "seed")} == {
        "users": 100,
        "movies": 150,
        "ratings": 5000,
        "seed": 2,
    }
    assert summary["out"] == str(tmp_path / "rel") and summary["seconds"] >= 0
    assert summary["stats"]["ratings_per_user"]["min"] >= 20


def test_cli_bad_arguments_give_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["synth", "--users", "100", "--ratings", "1000", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ratings must be in") and err.count("\n") == 1
    assert not (tmp_path / "x").exists()
