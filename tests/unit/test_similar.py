"""Similar movies: item features, the triplet loss and its mining, the metrics, the item tower on a
planted catalogue, the exported top-K graph, and the checks on tables and lists."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recsys import checks
from recsys.config import SimilarConfig
from recsys.data import features, pairs
from recsys.data.validation import validate_pairs
from recsys.errors import DataError, InvalidRequestError, ValidationFailed
from recsys.evaluation import similarity
from recsys.models.item_tower.export import write_bundle
from recsys.models.item_tower.model import distances, initial_ids, triplet_loss
from recsys.models.item_tower.training import evaluate_tower, train_tower
from recsys.runtime import similar
from tests.unit.test_pairs import CFG, planted

pytestmark = pytest.mark.unit


def test_item_features_read_genres_decade_and_title_words():
    catalogue = pd.DataFrame(
        {
            "title": ["Toy Story (1995)", "Toy Soldiers (1991)", "Heat (1995)", "Untitled"],
            "genres": ["Animation|Children", "Action", "Action|Crime", "(no genres listed)"],
        }
    )
    feats = features.item_features(catalogue, title_min_count=2)
    assert feats.genre_names == ["Action", "Animation", "Children", "Crime"]
    assert feats.genres.tolist() == [[0, 1, 1, 0], [1, 0, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]]
    assert feats.decade.tolist()[:3] == [10, 10, 10] and feats.decade[3] == 0  # 1990s; unknown
    assert feats.vocabulary == ["toy"]  # the only word in two titles; the year is not a word
    assert feats.words[:, 0].tolist() == [1, 1, 0, 0]
    assert features.title_words("Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)")[:2] == ["am", "lie"]


def test_triplet_loss_mines_the_hardest_or_the_semi_hard_negative():
    anchors = torch.tensor([[1.0, 0.0]])
    positives = torch.tensor([[0.8, 0.6]])  # cosine distance 0.2
    candidates = torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # 0.4, 0.0, 1.0, 2.0
    allowed = torch.tensor([[True, False, True, True]])  # the second is a known positive
    d = distances(anchors, candidates, "cosine")
    assert d.tolist()[0] == pytest.approx([0.4, 0.0, 1.0, 2.0])
    hard, share = triplet_loss(anchors, positives, candidates, allowed, 0.5, "batch_hard", "cosine")
    assert float(hard) == pytest.approx(0.2 - 0.4 + 0.5) and float(share) == 1.0
    # semi-hard: the closest negative farther than the positive is also 0.4 here ...
    semi, _ = triplet_loss(anchors, positives, candidates, allowed, 0.5, "semi_hard", "cosine")
    assert float(semi) == pytest.approx(0.3)
    # ... and without it, the next one (1.0): the loss is then zero for this margin
    semi, share = triplet_loss(
        anchors, positives, candidates, torch.tensor([[False, False, True, True]]), 0.5, "semi_hard", "cosine"
    )
    assert float(semi) == 0.0 and float(share) == 0.0
    # no farther negative at all: the farthest one (FaceNet keeps the easy side)
    closer = torch.tensor([[0.6, 0.8]])
    semi, _ = triplet_loss(
        anchors, torch.tensor([[0.0, 1.0]]), closer, torch.tensor([[True]]), 0.5, "semi_hard", "cosine"
    )
    assert float(semi) == pytest.approx(1.0 - 0.4 + 0.5)
    l2, _ = triplet_loss(anchors, positives, candidates, allowed, 1.0, "batch_hard", "l2")
    assert float(l2) == pytest.approx(np.sqrt(0.4) - np.sqrt(0.8) + 1.0, rel=1e-5)


def test_metrics_are_perfect_for_perfect_vectors_and_inverted_for_inverted_ones():
    movie_ids = np.array([10, 11, 12, 13, 14])
    table = pd.DataFrame(
        {
            "movie_id_first": [10, 10, 10, 10],
            "movie_id_second": [11, 12, 13, 14],
            "kind": ["positive", "hard_negative", "soft_negative", "positive"],
        }
    )
    good = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [0.8, 0.2]])
    metrics = similarity.similarity_metrics(
        similarity.vector_scores(good, "cosine"), table, movie_ids, ks=(2, 4)
    )
    assert metrics["recall_at_2"] == 1.0 and metrics["auc_hard"] == 1.0 and metrics["auc_soft"] == 1.0
    bad = np.array([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.1], [0.9, 0.0], [-0.9, -0.1]])
    metrics = similarity.similarity_metrics(
        similarity.vector_scores(bad, "cosine"), table, movie_ids, ks=(2, 4)
    )
    assert metrics["recall_at_2"] == 0.0 and metrics["recall_at_4"] == 1.0
    assert metrics["auc_hard"] == 0.0 and metrics["auc_soft"] == 0.0 and metrics["queries"] == 1
    # a positive the catalogue lacks is a miss
    missing = pd.concat([table, table.iloc[:1].assign(movie_id_second=99)])
    metrics = similarity.similarity_metrics(
        similarity.vector_scores(good, "cosine"), missing, movie_ids, ks=(4,)
    )
    assert metrics["recall_at_4"] == pytest.approx(2 / 3)


def test_the_tower_learns_what_the_characteristics_cannot_tell_apart():
    """Tastes 0 and 1 share every characteristic: only the triplets can separate them (through the
    ids: the content loss, which asks the features alone to, is off)."""
    train, catalogue = planted()
    table = pairs.mine(train, catalogue, CFG)
    cfg = SimilarConfig(
        max_epochs=15,
        patience=15,
        batch_size=64,
        random_per_batch=32,
        id_dropout=0.0,
        content_weight=0.0,
        learning_rate=3e-3,
    )
    result = train_tower(table, catalogue, cfg)
    genre = similarity.similarity_metrics(
        similarity.vector_scores(features.item_features(catalogue).genres, "cosine"),
        table[table["split"] == "valid"],
        catalogue["movie_id"].to_numpy(),
    )
    assert genre["auc_hard"] == pytest.approx(0.5)  # the same genres, decade and band
    # On the queries it trained on: the held-out queries of this planted catalogue are linked to the
    # rest only by pairs that mirror their held-out ones, which training leaves out
    fit = evaluate_tower(result.model, table, "train", catalogue["movie_id"].to_numpy())
    assert fit["auc_hard"] > 0.9 and fit["recall_at_10"] > genre["recall_at_10"]
    assert result.epochs[-1]["triplet_loss"] < result.epochs[0]["triplet_loss"]
    curve = [result.start_valid["recall_at_10"]] + [e["valid_recall_at_10"] for e in result.epochs]
    assert result.best_epoch == int(np.argmax(curve))  # epoch 0: the untrained start


def test_a_tower_started_from_vectors_ranks_as_they_do_then_keeps_its_best_epoch():
    """Fine-tuning: the id embeddings start from another model's vectors (matched by movie id, a
    movie it lacks starting at random) and the features start at zero, so the untrained tower ranks
    as those vectors do; the epoch kept is never worse on validation than that start."""
    train, catalogue = planted()
    table = pairs.mine(train, catalogue, CFG)
    rng = np.random.default_rng(1)
    taste = np.eye(3)[np.arange(60) // 20] * 2.0 + rng.normal(0, 0.4, (60, 3))
    vectors = np.concatenate([taste, -taste], axis=1)  # every row sums to 0: LayerNorm keeps cosines
    # another model's catalogue: reversed, without the first movie, with a movie this one lacks
    their_ids = np.concatenate([catalogue["movie_id"].to_numpy()[:0:-1], [5]])
    theirs = np.concatenate([vectors[:0:-1], np.ones((1, 6))])
    aligned = similarity.align_vectors(theirs, their_ids, catalogue["movie_id"].to_numpy())
    assert np.isnan(aligned[0]).all() and np.allclose(aligned[1:], vectors[1:])
    start_ids = initial_ids(aligned, seed=0)
    assert np.isfinite(start_ids).all() and np.linalg.norm(start_ids[1:], axis=1).mean() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="vectors for"):
        similarity.align_vectors(theirs[:5], their_ids, catalogue["movie_id"].to_numpy())

    cfg = SimilarConfig(embedding_dim=6, max_epochs=3, patience=3, batch_size=64, random_per_batch=32)
    result = train_tower(table, catalogue, cfg, init_vectors=aligned)
    valid = table[table["split"] == "valid"]
    centred = start_ids - start_ids.mean(1, keepdims=True)  # LayerNorm's centring (the random row)
    expected = similarity.similarity_metrics(
        similarity.vector_scores(centred, "cosine"), valid, catalogue["movie_id"].to_numpy()
    )
    assert result.start_valid["auc_hard"] > 0.9  # the vectors tell the tastes apart; genres cannot
    for metric in ("recall_at_10", "auc_hard", "auc_soft"):
        assert result.start_valid[metric] == pytest.approx(expected[metric], abs=1e-6)
    assert result.valid["recall_at_10"] >= result.start_valid["recall_at_10"]
    kept = evaluate_tower(result.model, table, "valid", catalogue["movie_id"].to_numpy())
    assert kept["recall_at_10"] == pytest.approx(result.valid["recall_at_10"])
    # a wider tower projects the vectors orthogonally at the start: their dot products are kept
    wide = train_tower(table, catalogue, cfg.model_copy(update={"embedding_dim": 16}), init_vectors=aligned)
    assert wide.start_valid["auc_hard"] > 0.9


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_the_exported_graph_returns_each_movies_nearest_other_movies(tmp_path, distance):
    train, catalogue = planted()
    table = pairs.mine(train, catalogue, CFG)
    result = train_tower(table, catalogue, SimilarConfig(max_epochs=1, distance=distance))
    folder = write_bundle(result.model, catalogue, 7, tmp_path / "bundle", {"pairs_version": "p1"})
    bundle = similar.SimilarBundle.load(folder)
    assert bundle.k == 7 and bundle.distance == distance and bundle.meta["pairs_version"] == "p1"
    lists = similar.score_similar(bundle, "3", "p1", batch=16)
    similar.check_similar(lists, 7)
    scores = similarity.vector_scores(np.load(folder / "item_vectors.npy"), distance)(np.arange(60))
    np.fill_diagonal(scores, -np.inf)
    for row in (0, 25, 59):
        got = lists.loc[row, "scores"]
        assert got == pytest.approx(np.sort(scores[row])[::-1][:7], abs=1e-4)
        assert set(lists.loc[row, "movie_ids"]) <= set(catalogue["movie_id"]) - {catalogue["movie_id"][row]}


def test_every_movie_gets_a_list_new_ones_from_their_features_and_rare_ones_are_no_candidates(tmp_path):
    train, catalogue = planted()
    table = pairs.mine(train, catalogue, CFG)
    cfg = SimilarConfig(max_epochs=6, id_dropout=0.5, learning_rate=3e-3, distance="cosine")
    result = train_tower(table, catalogue, cfg)
    # the features-only path: a Drama|War movie of the 1950s lands among the Drama|War movies
    cold = evaluate_tower(result.model, table, "valid", catalogue["movie_id"].to_numpy(), cold=True)
    assert cold["auc_soft"] > 0.9
    rare = pd.Series([2001])  # rated in training, too rarely to be in the catalogue
    folder = write_bundle(result.model, catalogue, 7, tmp_path / "bundle", {"pairs_version": "p"}, rare)
    bundle = similar.SimilarBundle.load(folder)
    movies = pd.concat(
        [
            catalogue[["movie_id", "title", "genres"]],
            pd.DataFrame(
                {
                    "movie_id": [2001, 3001],
                    "title": ["Movie 60 (1956)", "Movie 61 (1957)"],
                    "genres": ["Drama|War", "Drama|War"],
                }
            ),
        ]
    )
    tonight = bundle.with_movies(movies)
    assert tonight.n_items == 62 and tonight.n_trained == bundle.n_trained == 60
    lists = similar.score_similar(tonight, "1", "p").set_index("movie_id")
    similar.check_similar(lists.reset_index(), 7)
    assert lists["source"].to_dict() == {**dict.fromkeys(range(1000, 1060), "collaborative"), 2001: "content",
                                         3001: "content"}  # fmt: skip
    taste = dict(zip(catalogue["movie_id"], np.arange(60) // 20))
    for movie in (2001, 3001):  # their lists: the Drama|War movies
        assert {taste.get(m, 2) for m in lists.loc[movie, "movie_ids"]} == {2}
    listed = {m for items in lists["movie_ids"] for m in items}
    assert 2001 not in listed and 3001 in listed  # the new movie is recommended, the rare one is not
    # ... beside its own nearest movies only (not a hub), each list holding at most one new movie
    holders = [m for m, items in lists["movie_ids"].items() if 3001 in items]
    assert set(holders) <= set(lists.loc[3001, "movie_ids"]) | {2001}
    for slots in (2, 50):  # more places than new movies, or than K: still K distinct, best first
        similar.check_similar(similar.score_similar(tonight, "1", "p", fresh_slots=slots), 7)
    # the exported item tower gives what the trained tower gives from the features alone
    with torch.no_grad():
        expected = result.model.content_vectors().numpy()[:3]
    assert bundle.embed(catalogue.iloc[:3]) == pytest.approx(expected, abs=1e-5)


def test_damaged_lists_and_bundles_are_refused(tmp_path):
    lists = pd.DataFrame(
        {
            "movie_id": [1, 2],
            "movie_ids": [[2, 3], [1, 1]],
            "scores": [[0.9, 0.5], [0.9, 0.8]],
            "source": "collaborative",
            "model_version": "1",
            "data_version": "d",
        }
    )
    with pytest.raises(DataError, match="movie 2 lists a movie twice"):
        similar.check_similar(lists, 2)
    with pytest.raises(DataError, match="movie 1 holds 2 movies and 2 scores, not 3"):
        similar.check_similar(lists, 3)
    with pytest.raises(DataError, match="movie 1 lists the movie itself"):
        similar.check_similar(lists.assign(movie_ids=[[1, 3], [3, 4]]), 2)
    with pytest.raises(DataError, match="not finite or not best first"):
        similar.check_similar(lists.assign(movie_ids=[[2, 3], [3, 4]], scores=[[0.1, 0.5], [1, 0]]), 2)
    with pytest.raises(DataError, match="movie 1 have source 'model', not 'collaborative' or 'content'"):
        similar.check_similar(lists.assign(movie_ids=[[2, 3], [3, 4]], source="model"), 2)
    with pytest.raises(DataError, match="lacks"):
        similar.SimilarBundle.load(tmp_path)


def test_suite_pairs_names_what_is_wrong_with_a_table():
    train, catalogue = planted()
    table = pairs.mine(train, catalogue, CFG)
    assert validate_pairs(table, CFG.min_positives, CFG.max_positives)["success"]
    bad = table.copy()
    bad.loc[0, "movie_id_second"] = bad.loc[0, "movie_id_first"]
    bad.loc[1, "label"] = 0  # a positive labelled 0
    moved = bad["movie_id_first"] == bad["movie_id_first"].iat[-1]
    bad.loc[moved[moved].index[:1], "split"] = "test" if bad.loc[moved, "split"].iat[0] != "test" else "train"
    with pytest.raises(ValidationFailed) as failed:
        validate_pairs(bad, CFG.min_positives, CFG.max_positives)
    report = failed.value.report
    assert "[self_pair]" in report and "[label_matches_kind]" in report and "[query_splits]" in report
    with pytest.raises(ValidationFailed, match="missing column"):
        validate_pairs(table.drop(columns=["kind"]), 1, 20)


def test_movie_ids_and_similar_requests_are_checked():
    assert checks.movie_id("42") == 42
    for bad in (0, -1, 1.5, "abc", 2**63):
        with pytest.raises(InvalidRequestError, match="movie_id must be an integer"):
            checks.movie_id(bad)
    ids, ks = checks.check_frame(pd.DataFrame({"movie_id": [1, 2], "k": [5, 20]}), 20, "movie_id")
    assert ids == [1, 2] and ks == [5, 20]
    with pytest.raises(InvalidRequestError, match="row 1: k must be an integer in 1..20"):
        checks.check_frame(pd.DataFrame({"movie_id": [1, 2], "k": [5, 21]}), 20, "movie_id")
    with pytest.raises(InvalidRequestError, match="unknown column"):
        checks.check_frame(pd.DataFrame({"movie_id": [1], "user_id": [1]}), 20, "movie_id")


def test_the_movie_similar_pyfunc_answers_from_its_graph(tmp_path):
    from types import SimpleNamespace

    from mlflow.exceptions import MlflowException

    from recsys.serving.models import SimilarModel

    train, catalogue = planted()
    table = pairs.mine(train, catalogue, CFG)
    result = train_tower(table, catalogue, SimilarConfig(max_epochs=1))
    folder = write_bundle(result.model, catalogue, 5, tmp_path / "bundle", {})
    model = SimilarModel()
    model.load_context(SimpleNamespace(artifacts={"bundle": str(folder)}))
    rows = model.predict(None, pd.DataFrame({"movie_id": [1003, 1000], "k": [2, 5]}))
    lists = similar.score_similar(similar.SimilarBundle.load(folder), "1", "p").set_index("movie_id")
    assert [r["movie_id"] for r in rows] == [1003, 1000] and [len(r["similar"]) for r in rows] == [2, 5]
    assert [m for m, _, _ in rows[1]["similar"]] == lists.loc[1000, "movie_ids"].tolist()
    assert rows[1]["similar"][0][2] == catalogue.set_index("movie_id").loc[rows[1]["similar"][0][0], "title"]
    # a movie the version does not know is marked in its row; the batch still answers the others
    unknown, known = model.predict(None, pd.DataFrame({"movie_id": [5, 1000], "k": [2, 5]}))
    assert unknown["similar"] == [] and unknown["source"] == "none"
    assert "movie 5 is unknown to this movie_similar version" in unknown["reason"]
    assert known["similar"] == rows[1]["similar"] and "reason" not in known
    for frame, message in [
        (pd.DataFrame({"movie_id": [1000], "k": [6]}), "k must be an integer in 1..5"),
        (pd.DataFrame([[1000, 1000]], columns=["movie_id", "movie_id"]), "appears more than once"),
    ]:
        with pytest.raises(MlflowException, match=message) as raised:
            model.predict(None, frame)
        assert raised.value.get_http_status_code() == 400
