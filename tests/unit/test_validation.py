"""great-expectations suites: the bundled sample passes, each kind of corruption fails by name."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.config import PROJECT_ROOT, DataConfig
from recsys.data import validation
from recsys.data.prepared import Prepared, load_movies, load_ratings, prepare
from recsys.errors import DataError, ValidationFailed

pytestmark = pytest.mark.unit

SAMPLE = PROJECT_ROOT / "data" / "ml-latest-small"


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    return load_ratings(SAMPLE / "ratings.csv")


@pytest.fixture(scope="module")
def prepared(ratings: pd.DataFrame) -> Prepared:
    return prepare(ratings, load_movies(SAMPLE / "movies.csv"), DataConfig())


def failed(error: ValidationFailed) -> set[tuple[str, str]]:
    """(expectation type, column(s)) of every failed expectation named in the report."""
    return set(re.findall(r"^- (\w+) \[([^\]]*)\]$", error.report, flags=re.MULTILINE))


def reload(frame: pd.DataFrame, tmp_path: Path) -> pd.DataFrame:
    """Write a corrupted copy of ratings.csv and read it back the way ingest does."""
    path = tmp_path / "ratings.csv"
    frame.rename(columns={"user_id": "userId", "movie_id": "movieId"}).to_csv(path, index=False)
    return load_ratings(path)


# ratings_raw ---------------------------------------------------------------------------------------


def test_sample_ratings_pass(ratings: pd.DataFrame) -> None:
    summary = validation.validate_ratings(ratings)
    assert summary["success"] is True
    assert summary["suite"] == "ratings_raw"
    assert summary["rows"] == 100_836
    assert summary["evaluated_expectations"] == summary["successful_expectations"] == 15


def _set_rating(value: float | None):
    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[3, "rating"] = value
        return frame

    return corrupt


def _set_cell(column: str, value: int):
    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[7, column] = value
        return frame

    return corrupt


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (_set_rating(None), {("expect_column_values_to_not_be_null", "rating")}),
        (_set_rating(3.3), {("expect_column_values_to_be_in_set", "rating")}),
        (_set_rating(7.0), {("expect_column_values_to_be_in_set", "rating")}),
        (_set_cell("user_id", -4), {("expect_column_values_to_be_between", "user_id")}),
        (_set_cell("timestamp", 5_680_281_600), {("expect_column_values_to_be_between", "timestamp")}),
        (
            lambda f: pd.concat([f, f.iloc[[10]]]),
            {("expect_compound_columns_to_be_unique", "user_id, movie_id")},
        ),
    ],
    ids=["null-rating", "rating-3.3", "rating-7", "negative-user", "timestamp-2150", "duplicate-pair"],
)
def test_corrupted_ratings_fail_by_name(ratings, tmp_path, corrupt, expected) -> None:
    bad = reload(corrupt(ratings.copy()), tmp_path)
    with pytest.raises(ValidationFailed) as info:
        validation.validate_ratings(bad)
    assert failed(info.value) == expected
    assert info.value.suite == "ratings_raw"
    assert "1 of" in info.value.report or "2 of" in info.value.report  # counts the bad rows


def test_a_failure_writes_the_suites_data_docs_page_and_names_it(ratings, tmp_path) -> None:
    bad = ratings.copy()
    bad.loc[3, "rating"] = 7.0
    with pytest.raises(ValidationFailed) as info:
        validation.validate_ratings(reload(bad, tmp_path), docs_dir=tmp_path / "docs")
    page = Path(info.value.docs)
    assert page.parent == (tmp_path / "docs" / "ratings_raw").resolve() and page.suffix == ".html"
    assert f"Data Docs: {page}" in str(info.value)
    html = page.read_text()
    text = re.sub(
        r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style).*?</\1>", " ", html, flags=re.S))
    )
    assert "Data documentation compiled by Great Expectations" in text  # GX's own page
    assert "Expectation Suite: ratings_raw" in text and "Status: Failed" in text
    assert "Unsuccessful Expectations 1 " in text and "1 unexpected" in text
    assert (page.parent / "latest.html").read_text() == html
    validation.validate_ratings(ratings, docs_dir=tmp_path / "docs")  # a pass writes nothing more
    assert len(list(page.parent.iterdir())) == 2


def test_report_quotes_bad_value_and_row(ratings, tmp_path) -> None:
    bad = ratings.copy()
    bad.loc[3, "rating"] = 3.3
    with pytest.raises(ValidationFailed) as info:
        validation.validate_ratings(reload(bad, tmp_path))
    user_id, movie_id = ratings.loc[3, "user_id"], ratings.loc[3, "movie_id"]
    assert "1 of 100836 rows unexpected" in info.value.report
    assert f"'rating': 3.3, 'user_id': {user_id}, 'movie_id': {movie_id}" in info.value.report
    assert "np." not in info.value.report


def test_missing_column_fails_readably(ratings) -> None:
    with pytest.raises(ValidationFailed) as info:
        validation.validate_ratings(ratings.drop(columns=["rating"]))
    assert ("expect_table_columns_to_match_set", "table") in failed(info.value)
    assert "'missing': ['rating']" in info.value.report
    assert "Traceback" not in info.value.report


def test_header_only_file_fails_row_count(tmp_path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(ValidationFailed) as info:
        validation.validate_ratings(load_ratings(path))
    assert ("expect_table_row_count_to_be_between", "table") in failed(info.value)


def test_zero_byte_file_never_reaches_validation(tmp_path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text("")
    with pytest.raises(DataError, match="cannot parse"):
        load_ratings(path)


# interactions --------------------------------------------------------------------------------------


def test_prepared_sample_passes(prepared: Prepared) -> None:
    summary = validation.validate_interactions(prepared, rating_threshold=4.0)
    assert summary["success"] is True
    assert summary["rows"] == len(prepared.interactions)


def test_item_idx_out_of_range_fails(prepared: Prepared) -> None:
    bad = prepared.interactions.copy()
    bad.loc[0, "item_idx"] = prepared.n_items  # one past the last catalogue index
    broken = Prepared(bad, prepared.catalogue, prepared.users, prepared.activity, prepared.meta)
    with pytest.raises(ValidationFailed) as info:
        validation.validate_interactions(broken, rating_threshold=4.0)
    assert failed(info.value) == {("expect_column_values_to_be_between", "item_idx")}


def test_threshold_parameter_is_applied(prepared: Prepared) -> None:
    with pytest.raises(ValidationFailed) as info:
        validation.validate_interactions(prepared, rating_threshold=4.5)
    assert failed(info.value) == {("expect_column_values_to_be_between", "rating")}


def test_second_test_row_for_a_user_fails(prepared: Prepared) -> None:
    bad = prepared.interactions.copy()
    first_train = bad.index[bad["split"] == "train"][0]
    bad.loc[first_train, "split"] = "test"
    broken = Prepared(bad, prepared.catalogue, prepared.users, prepared.activity, prepared.meta)
    with pytest.raises(ValidationFailed) as info:
        validation.validate_interactions(broken, rating_threshold=4.0)
    assert failed(info.value) == {("expect_compound_columns_to_be_unique", "user_idx, split")}


# recommendations -----------------------------------------------------------------------------------

RATED = pd.DataFrame({"user_id": [1, 1, 2], "movie_id": [1, 2, 3]})


def make_recs(
    items: list[list[int]] | None = None,
    scores: list[list[float]] | None = None,
    because: list[list[int]] | None = None,
) -> pd.DataFrame:
    items = items or [[10, 11, 12], [10, 13, 14]]
    scores = scores or [[0.9, 0.5, 0.1], [3.0, 2.0, 2.0]]
    because = because or [[1, 2, 1], [3, 0, 3]]  # user 1 rated 1 and 2, user 2 rated 3; 0: none
    return pd.DataFrame(
        {
            "user_id": np.array([1, 2], dtype=np.int64),
            "item_ids": [np.array(i, dtype=np.int64) for i in items],
            "scores": [np.array(s, dtype=np.float32) for s in scores],
            "because_ids": [np.array(b, dtype=np.int64) for b in because],
            "model_version": ["3", "3"],
            "data_version": ["d1", "d1"],
            "event_timestamp": pd.Timestamp("2024-05-01", tz="UTC"),
        }
    )


def test_valid_recommendations_pass() -> None:
    summary = validation.validate_recommendations(make_recs(), RATED, k=3)
    assert summary["success"] is True
    assert summary["rows"] == 2


def test_recommendation_checks_known_values() -> None:
    recs = make_recs(items=[[10, 10, 1], [3, 13]], scores=[[0.1, 0.5, np.nan], [2.0, 1.0]])
    checks = validation.recommendation_checks(recs, RATED)
    assert checks["n_items"].tolist() == [3, 2]
    assert checks["n_unique_items"].tolist() == [2, 2]
    assert checks["n_seen_items"].tolist() == [1, 1]
    assert checks["scores_sorted"].tolist() == [False, True]
    assert checks["scores_finite"].tolist() == [False, True]
    assert checks["because_parallel"].tolist() == [True, False]  # 3 reasons for 2 movies
    assert checks["because_rated"].tolist() == [True, True]
    # no reasons at all (score.explain off) pass; a frame without the column too
    none = validation.recommendation_checks(make_recs(because=[[], []]), RATED)
    assert none["because_parallel"].all() and none["because_rated"].all()
    assert validation.recommendation_checks(make_recs().drop(columns=["because_ids"]), RATED)[
        "because_parallel"
    ].all()


@pytest.mark.parametrize(
    ("recs", "expected"),
    [
        (
            make_recs(items=[[10, 11, 10], [10, 13, 14]]),
            {("expect_column_pair_values_to_be_equal", "n_unique_items, n_items")},
        ),
        (
            make_recs(items=[[10, 2, 12], [10, 13, 14]]),
            {("expect_column_values_to_be_in_set", "n_seen_items")},
        ),
        (
            make_recs(scores=[[0.9, 0.5, 0.1], [1.0, 2.0, 0.5]]),
            {("expect_column_values_to_be_in_set", "scores_sorted")},
        ),
        (
            make_recs(
                items=[[10, 11], [10, 13, 14]],
                scores=[[0.9, 0.5], [3.0, 2.0, 2.0]],
                because=[[1, 2], [3, 0, 3]],
            ),
            {("expect_column_values_to_be_between", "n_items")},
        ),
        (
            make_recs(scores=[[0.9, 0.5], [3.0, 2.0, 2.0]]),
            {("expect_column_pair_values_to_be_equal", "n_scores, n_items")},
        ),
        (
            make_recs(scores=[[0.9, np.nan, 0.1], [3.0, 2.0, 2.0]]),
            {("expect_column_values_to_be_in_set", "scores_finite")},
        ),
        (
            make_recs(because=[[1, 2], [3, 0, 3]]),
            {("expect_column_values_to_be_in_set", "because_parallel")},
        ),
        (
            make_recs(because=[[1, 2, 3], [3, 0, 3]]),  # user 1 never rated movie 3
            {("expect_column_values_to_be_in_set", "because_rated")},
        ),
    ],
    ids=[
        "duplicate-item",
        "seen-item",
        "unsorted-scores",
        "wrong-length",
        "scores-length",
        "nan-score",
        "reasons-not-parallel",
        "reason-not-rated",
    ],  # fmt: skip
)
def test_bad_recommendations_fail_by_name(recs, expected) -> None:
    with pytest.raises(ValidationFailed) as info:
        validation.validate_recommendations(recs, RATED, k=3)
    assert failed(info.value) == expected


def test_failing_recommendation_names_the_user() -> None:
    recs = make_recs(items=[[10, 11, 12], [10, 3, 14]])  # user 2 already rated movie 3
    with pytest.raises(ValidationFailed) as info:
        validation.validate_recommendations(recs, RATED, k=3)
    assert "{'n_seen_items': 1, 'user_id': 2}" in info.value.report


def test_duplicate_user_fails() -> None:
    recs = make_recs()
    recs.loc[1, "user_id"] = 1
    with pytest.raises(ValidationFailed) as info:
        validation.validate_recommendations(recs, RATED, k=3)
    assert ("expect_column_values_to_be_unique", "user_id") in failed(info.value)


def test_recommendations_missing_column_fail_readably() -> None:
    with pytest.raises(ValidationFailed, match=r"missing column\(s\) \['scores'\]"):
        validation.validate_recommendations(make_recs().drop(columns=["scores"]), RATED, k=3)


# API contract --------------------------------------------------------------------------------------


def test_missing_parameter_is_named(prepared: Prepared) -> None:
    with pytest.raises(ValueError, match="n_items"):
        validation.validate("interactions", prepared.interactions, {"n_users": 1, "rating_threshold": 4.0})


def test_unknown_suite_is_named(ratings: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="unknown validation suite 'nope'"):
        validation.validate("nope", ratings)


@pytest.mark.parametrize("name", validation.SUITES)
def test_suite_files_load_every_expectation(name: str) -> None:
    suite = validation._suite(name)
    assert len(suite.expectations) == len(validation._suite_json(name)["expectations"]) > 5


def test_listed_movies_must_be_in_the_served_catalogue_and_new_ones_are_allowed() -> None:
    # movie 14 has no training positive (new tonight: a content item tower placed it); 99 is unknown
    catalogue = pd.DataFrame({"movie_id": [10, 11, 12, 13, 14], "train_count": [5, 7, 9, 6, 0]})
    checks = validation.recommendation_checks(make_recs(), RATED, catalogue)
    assert checks["n_outside_catalogue"].tolist() == [0, 0]
    assert checks["n_new_items"].tolist() == [0, 1]
    assert validation.validate_recommendations(make_recs(), RATED, 3, catalogue=catalogue)["success"]
    outside = make_recs(items=[[10, 11, 99], [10, 13, 14]])
    with pytest.raises(ValidationFailed) as info:
        validation.validate_recommendations(outside, RATED, 3, catalogue=catalogue)
    assert failed(info.value) == {("expect_column_values_to_be_in_set", "n_outside_catalogue")}
