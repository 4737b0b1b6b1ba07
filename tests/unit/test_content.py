"""The content item tower: features through a fitted vocabulary (tags included), a movie new since
training placed by its features alone, and training that teaches the features to do it."""

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.config import DataConfig, ModelConfig, load_settings
from recsys.data.features import Vocabulary, movie_tags
from recsys.data.prepared import Prepared, prepare, with_tags
from recsys.models.two_tower.evaluation import catalogue_table
from recsys.models.two_tower.loss import full_softmax_loss
from recsys.models.two_tower.model import TwoTower, checkpoint, from_checkpoint
from recsys.models.two_tower.training import train

pytestmark = pytest.mark.unit


def test_a_vocabulary_fitted_at_training_encodes_a_later_catalogue():
    tags = pd.DataFrame(
        {"movie_id": [1, 1, 1, 2, 3], "tag": ["Pixar", "pixar ", "funny", "Funny", "one|off"]}
    )
    assert movie_tags(tags).to_dict() == {1: "pixar|funny", 2: "funny", 3: "one off"}
    trained = pd.DataFrame(
        {
            "movie_id": [1, 2, 3],
            "title": ["Toy Story (1995)", "Toy Soldiers (1991)", "Heat (1995)"],
            "genres": ["Animation|Children", "Action", "Action|Crime"],
        }
    )
    vocabulary = Vocabulary.fit(with_tags(trained, tags), min_count=2)
    assert vocabulary.genres == ("Action", "Animation", "Children", "Crime")
    assert vocabulary.words == ("toy",) and vocabulary.tags == ("funny",)  # the others: one movie each
    assert Vocabulary.from_dict(vocabulary.as_dict()) == vocabulary
    # a movie released after training: a known genre, an unknown one, a known word, a new tag
    today = pd.DataFrame(
        {"title": ["Toy Story 4 (2019)"], "genres": ["Animation|Western"], "tags": ["sequel|funny"]}
    )
    feats = vocabulary.encode(today)
    assert feats.genres.tolist() == [[0, 1, 0, 0]]
    assert feats.words[0, :2].tolist() == [1, 0] and feats.tags[0, :2].tolist() == [1, 0]
    assert feats.decade.tolist() == [12] and feats.year.tolist() == [[pytest.approx(1.9)]]
    # no tags column: no tags
    assert vocabulary.encode(today.drop(columns="tags")).tags.sum() == 0


def genre_world() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two camps of users who like only their genre's movies (Comedy: 1-8, Horror: 9-16); movies
    17 (Comedy) and 18 (Horror) arrive later and nobody rated them yet."""
    rng = np.random.default_rng(0)
    rows, t = [], 0
    for user in range(1, 41):
        own = range(1, 9) if user <= 20 else range(9, 17)
        for movie in rng.permutation(list(own))[:6]:
            t += 1
            rows.append((user, int(movie), 5.0, t))
    ratings = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])
    movies = pd.DataFrame(
        {
            "movie_id": range(1, 19),
            "title": [f"{'Funny' if m <= 8 or m == 17 else 'Scary'} Film {m} (2001)" for m in range(1, 19)],
            "genres": ["Comedy" if m <= 8 or m == 17 else "Horror" for m in range(1, 19)],
        }
    )
    return ratings, movies


def settings(*extra):
    return load_settings(
        [
            "train.progress_bar=false", "train.batch_size=16", "train.max_epochs=30",
            "train.learning_rate=0.02", "train.patience=30", "model.embedding_dim=16",
            "model.history_length=6", "model.dropout=0.0", "model.item_tower=content",
            "model.id_dropout=0.5", *extra,
        ],
        env={},
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained() -> tuple[Prepared, pd.DataFrame, TwoTower]:
    """The genre world prepared (movies 17 and 18 unrated: outside the catalogue) and a content
    tower trained on it."""
    ratings, movies = genre_world()
    prepared = prepare(ratings, movies, DataConfig(min_user_interactions=3, min_item_interactions=3))
    return prepared, movies, train(prepared, settings()).model


def test_a_new_movie_reaches_the_users_of_its_genre_without_a_retrain(trained):
    prepared, movies, model = trained
    assert not {17, 18} & set(prepared.catalogue["movie_id"])
    # tonight's catalogue: the trained movies, then the two new ones (no trained id)
    tonight = pd.concat(
        [
            prepared.catalogue,
            movies[movies["movie_id"] >= 17].assign(item_idx=[prepared.n_items, prepared.n_items + 1]),
        ],
        ignore_index=True,
    )
    table = catalogue_table(model, tonight)
    assert table.shape == (len(tonight) + 1, 16) and table[-1].abs().sum() == 0
    # the trained movies' vectors are the model's own
    assert torch.allclose(table[: prepared.n_items], model.item_vectors().detach(), atol=1e-5)
    comedy_fan = prepared.split("train").query("user_id == 1")["item_idx"].to_numpy()
    horror_fan = prepared.split("train").query("user_id == 40")["item_idx"].to_numpy()
    with torch.no_grad():
        for history, liked, other in ((comedy_fan, -2, -1), (horror_fan, -1, -2)):
            user = model.user_vectors(history=torch.as_tensor(history[None, -6:]), table=table)
            scores = (user @ table[:-1].T)[0]
            assert scores[liked] > scores[other]  # the new movie of the user's genre first
    # a new movie in a history counts: the horror movie alone reads as a horror fan
    new_only = torch.tensor([[len(tonight)] * 5 + [len(tonight) - 1]])
    with torch.no_grad():
        user = model.user_vectors(history=new_only, table=table)
        scores = (user @ table[:-1].T)[0]
    horror = torch.as_tensor((tonight["genres"] == "Horror").to_numpy())
    assert scores[horror].mean() > scores[~horror].mean()


def test_the_content_tower_keeps_its_vocabulary_and_ids_hide_only_in_training():
    ratings, movies = genre_world()
    prepared = prepare(ratings, movies, DataConfig(min_user_interactions=3, min_item_interactions=3))
    model = train(prepared, settings("train.max_epochs=1")).model
    rebuilt = from_checkpoint(checkpoint(model))
    assert rebuilt.vocabulary == model.vocabulary
    assert torch.equal(rebuilt.item_vectors(), model.item_vectors())  # eval: no id is hidden
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model.item_vectors(), rebuilt.item_vectors())
    with pytest.raises(ValueError, match="vocabulary"):
        TwoTower(2, 4, ModelConfig(item_tower="content"))
    id_model = TwoTower(2, 4, ModelConfig(item_tower="id"))
    with pytest.raises(ValueError, match="reads ids only"):
        catalogue_table(id_model, movies.assign(item_idx=range(len(movies))))


def test_tail_negatives_are_extra_columns_of_the_full_softmax():
    ratings, movies = genre_world()
    prepared = prepare(ratings, movies, DataConfig(min_user_interactions=3, min_item_interactions=3))
    tail = movies[movies["movie_id"] >= 17]
    result = train(prepared, settings("model.tail_negatives=2", "train.max_epochs=1"), tail=tail)
    model = result.model
    assert model.n_negatives == 2 and model.negative_vectors(2)[0].shape == (2, 16)
    one, correction = model.negative_vectors(1)
    assert one.shape == (1, 16) and correction == pytest.approx(np.log(2))
    assert "negative_genres" not in model.state_dict()  # training material, not weights
    queries, targets = torch.randn(3, 16), torch.tensor([0, 1, 2])
    with torch.no_grad():
        loss = full_softmax_loss(model, queries, targets)
        logits = queries @ torch.cat([model.item_vectors(), model.negative_vectors()[0]]).T
    assert float(loss) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, targets)), rel=1e-5)


def test_the_served_bundle_embeds_tonights_new_movies_and_scores_them(trained, tmp_path):
    """Through ONNX Runtime alone: item_tower.onnx places the new movies where torch does, and the
    fast scoring path ranks them for the users of their genre, histories with new movies included."""
    from recsys.runtime.two_tower import ModelBundle
    from recsys.tracking.two_tower import write_bundle

    prepared, movies, model = trained
    bundle = ModelBundle.load(write_bundle(model, prepared, settings(), tmp_path / "bundle"))
    assert bundle.reads_content and bundle.n_trained == prepared.n_items
    tonight = bundle.with_movies(movies)
    assert tonight.n_items == prepared.n_items + 2 and bundle.n_items == prepared.n_items
    assert tonight.catalogue["movie_id"].tolist()[-2:] == [17, 18]
    assert tonight.catalogue["train_count"].tolist()[-2:] == [0, 0]
    expected = catalogue_table(model, tonight.catalogue)[:-1].numpy()
    np.testing.assert_allclose(tonight.item_vectors, expected, atol=1e-5)
    assert tonight.with_movies(movies[movies["movie_id"] == 17]).n_items == tonight.n_items  # no repeats
    retriever = tonight.retriever
    pad = tonight.n_items
    comedy = prepared.split("train").query("user_id == 1")["item_idx"].to_numpy()[-6:]
    comedy_fan = np.concatenate([np.full(6 - len(comedy), pad), comedy])
    horror_new = np.array([pad] * 5 + [tonight.item_index(np.array([18]))[0]])
    seen = [comedy, np.array([pad - 1])]
    idx, scores = retriever.recommend(np.vstack([comedy_fan, horror_new]), seen)
    movie = tonight.movie_ids
    # the comedy fan's list has the new comedy above the new horror movie; the user whose only
    # positive is the new horror movie gets horror first
    first = list(movie[idx[0]])
    assert first.index(17) < first.index(18)
    assert tonight.catalogue.set_index("movie_id").loc[int(movie[idx[1, 0]]), "genres"] == "Horror"
    with torch.no_grad():
        table = catalogue_table(model, tonight.catalogue)
        user = model.user_vectors(history=torch.as_tensor(horror_new[None]), table=table)
    np.testing.assert_allclose(scores[1, 0], float((user @ table[:-1].T).max()), atol=1e-4)


def test_the_last_places_of_a_list_are_kept_for_the_movies_new_since_training(trained, tmp_path):
    """score.fresh_slots: the user's best movies among those new since training take the last
    places of the list when the model does not rank them into it; a rare movie (rated in the
    training data, outside its catalogue) gets no such place."""
    from recsys.runtime.two_tower import RARE_FILE, ModelBundle
    from recsys.tracking.two_tower import write_bundle

    prepared, movies, model = trained
    folder = write_bundle(model, prepared, settings("score.k=10"), tmp_path / "bundle")
    assert np.load(folder / RARE_FILE).tolist() == []  # every rated movie was trained here
    bundle = ModelBundle.load(folder)
    users = prepared.split("train").groupby("user_idx")["item_idx"].agg(list)
    pad = prepared.n_items
    histories = np.array([([pad] * 6 + items)[-6:] for items in users], dtype=np.int64)
    # nothing seen is masked: every trained movie competes for the 10 places, so the model leaves
    # a new movie out of some lists on its own (with the seen masked, few candidates are left)
    seen = [np.asarray([], dtype=np.int64) for _ in users]

    def lists(slots: int, rare: list[int]) -> tuple[np.ndarray, np.ndarray]:
        np.save(folder / RARE_FILE, np.asarray(rare, dtype=np.int64))
        tonight = bundle.with_movies(movies, fresh_slots=slots)
        idx, scores = tonight.retriever.recommend(histories, seen)
        return tonight.movie_ids[idx], scores

    plain, _ = lists(0, [])
    kept, scores = lists(2, [])
    assert not all({17, 18} <= set(row) for row in plain)  # without slots some list lacks one
    assert all({17, 18} <= set(row) for row in kept)  # with two, every list holds both
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # still best first
    for row, was in zip(kept, plain):  # the first 8 are the plain list's, the new movies the rest
        assert list(row[:8]) == list(was[:8]) and set(row[8:]) <= {17, 18} | set(was[8:])
    only, _ = lists(2, [18])  # 18 is rare: one place kept, for 17
    assert (only[:, :9] == plain[:, :9]).all() and all(17 in row for row in only)


def test_fresh_places_the_new_movies_cannot_take_keep_the_rest_of_the_top_k():
    from recsys.runtime.fresh import fresh_tail

    scores = np.linspace(1.0, 0.05, 20, dtype=np.float32)[None].repeat(2, axis=0)
    scores[:, 18], scores[:, 19] = 2.0, -1.0  # new movie 18 tops the list, 19 is far below it
    scores[0, 19] = -np.inf  # the first user has seen 19 (masked_topk wrote -inf over it)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :6]
    top[0] = [18, 0, 1, 2, 3, 4]
    out, kept = fresh_tail(
        top, np.take_along_axis(scores, top, 1), scores[:, [18, 19]], np.array([18, 19]), 2
    )
    # nothing left to keep a place for: the list is the plain top 6, not short
    assert out[0].tolist() == [18, 0, 1, 2, 3, 4]
    # the second user gets 19 in the last place and keeps the plain list's fifth
    assert out[1].tolist() == [18, 0, 1, 2, 3, 19] and (np.diff(kept, axis=1) <= 0).all()
