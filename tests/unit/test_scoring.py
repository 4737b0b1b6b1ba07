"""Fresh scoring from today's activity through a model bundle, and the promotion gate's logic."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.config import load_settings
from recsys.errors import DataError
from recsys.models.two_tower.evaluation import evaluate_model
from recsys.models.two_tower.training import new_model
from recsys.runtime.scoring import inputs_from_histories, score_users, user_inputs, without_movies
from recsys.runtime.two_tower import BUNDLE_FILE, ModelBundle
from recsys.tracking.gate import decide, evaluate_bundle, list_ranks
from recsys.tracking.two_tower import write_bundle

pytestmark = pytest.mark.unit


def make_bundle(tiny, tmp_path, tower="sasrec", k=10):
    torch.manual_seed(0)
    settings = load_settings(
        [f"model.user_tower={tower}", "model.embedding_dim=8", "model.history_length=4", f"score.k={k}"],
        env={},
    )
    model = new_model(tiny, settings).eval()
    return model, ModelBundle.load(write_bundle(model, tiny, settings, tmp_path / tower))


@pytest.fixture(scope="module")
def bundle(tiny, tmp_path_factory):
    """One exported sasrec bundle (K=10) for the tests that only read it: an export takes seconds."""
    return make_bundle(tiny, tmp_path_factory.mktemp("sasrec"))[1]


def activity(rows):
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])


def test_inputs_come_from_todays_activity(bundle):
    pad = bundle.n_items
    today = activity(
        [
            (7, 2, 5.0, 30),
            (7, 4, 4.0, 10),
            (7, 999, 5.0, 20),
            (7, 6, 1.0, 40),  # 999 unknown
            (500, 3, 4.5, 1),  # a user the model never saw
            (501, 5, 2.0, 1),  # ratings but no positive
        ]
    )
    inputs = user_inputs(today, bundle)
    assert inputs.user_ids.tolist() == [7, 500, 501]
    idx = bundle.item_index(np.array([4, 2, 6, 3, 5]))
    # history: positives in time order, unknown movie skipped, left-padded to H=4
    assert inputs.user[0].tolist() == [pad, pad, idx[0], idx[1]]
    assert inputs.user[1].tolist() == [pad, pad, pad, idx[3]]
    # seen: everything rated, whatever the rating (known movies only)
    assert sorted(inputs.seen[0].tolist()) == sorted(idx[:3].tolist())
    # the stored recent history keeps the unknown movie: it is today's behaviour
    assert inputs.recent[0].tolist() == [4, 999, 2]
    assert inputs.personal.tolist() == [True, True, False]


def test_scoring_personalises_new_users_and_excludes_everything_rated(bundle):
    today = activity([(7, 2, 5.0, 1), (7, 4, 1.0, 2), (500, 3, 4.5, 1), (501, 5, 2.0, 1)])
    recs = score_users(bundle, user_inputs(today, bundle), "4", "abc.dir", batch_size=2)
    assert recs["source"].tolist() == ["model", "model", "popular"]
    assert (recs["model_version"] == "4").all() and (recs["data_version"] == "abc.dir").all()
    rated = today.groupby("user_id")["movie_id"].apply(set)
    for user, items in zip(recs["user_id"], recs["item_ids"]):
        assert len(items) == 10 and not set(items.tolist()) & rated[user]
    popular = bundle.movie_ids[bundle.popular].tolist()
    assert recs["item_ids"][2].tolist() == [m for m in popular if m != 5][:10]
    # a batch row equals the single-user call
    one = score_users(bundle, user_inputs(today, bundle, np.array([500])), "4", "abc.dir")
    assert one["item_ids"][0].tolist() == recs["item_ids"][1].tolist()


def test_blocked_movies_leave_every_list_like_seen_ones(bundle):
    today = activity([(7, 2, 5.0, 1), (7, 4, 1.0, 2), (501, 5, 2.0, 1)])  # 501: the popular list
    inputs = user_inputs(today, bundle)
    before = score_users(bundle, inputs, "1", "d1")
    blocked = {int(before["item_ids"][0][0]), int(before["item_ids"][1][0]), 10**9}  # 10**9: unknown
    after = score_users(bundle, without_movies(inputs, bundle, blocked), "1", "d1")
    for old, new in zip(before["item_ids"], after["item_ids"]):
        assert len(new) == len(old) and not blocked & set(new.tolist())
        kept = [m for m in old.tolist() if m not in blocked]
        assert new.tolist()[: len(kept)] == kept  # the rest keep their order and move up
    assert without_movies(inputs, bundle, {10**9}) is inputs  # nothing the model knows: unchanged


def test_a_new_positive_changes_the_list_without_a_retrain(bundle):
    before = activity([(7, 2, 5.0, 1), (7, 4, 5.0, 2)])
    first = score_users(bundle, user_inputs(before, bundle), "1", "d1")["item_ids"][0]
    newly = int(first[0])  # the user now rates the top recommendation
    after = pd.concat([before, activity([(7, newly, 5.0, 3)])])
    second = score_users(bundle, user_inputs(after, bundle), "1", "d2")["item_ids"][0]
    assert newly not in second.tolist()
    # not only the seen mask: the new positive changed the user vector, so the ranking of the
    # remaining items changed too ...
    without = [m for m in first.tolist() if m != newly]
    assert second.tolist()[: len(without)] != without
    # ... while a new 1-star rating only joins the seen set and leaves the ranking as it was
    disliked = pd.concat([before, activity([(7, newly, 1.0, 3)])])
    third = score_users(bundle, user_inputs(disliked, bundle), "1", "d3")["item_ids"][0]
    assert third.tolist()[: len(without)] == without


def test_id_tower_scores_known_users_and_gives_others_the_popular_list(tiny, tmp_path):
    _, bundle = make_bundle(tiny, tmp_path, tower="id")
    known = int(tiny.users["user_id"].iloc[0])
    recs = score_users(
        bundle, user_inputs(activity([(known, 2, 5.0, 1), (999, 2, 5.0, 1)]), bundle), "1", "d"
    )
    assert recs.set_index("user_id")["source"].to_dict() == {known: "model", 999: "popular"}


def test_every_recommended_movie_carries_the_history_movie_closest_to_it(bundle):
    from recsys.runtime.explain import NONE, because

    today = activity([(7, 2, 5.0, 1), (7, 4, 5.0, 2), (7, 6, 1.0, 3), (501, 5, 2.0, 1)])
    inputs = user_inputs(today, bundle)
    recs = score_users(bundle, inputs, "1", "d")
    model, popular = recs.iloc[0], recs.iloc[1]
    # parallel to the list; every reason is a positive of the user (the 1-star movie 6 is not)
    assert len(model["because_ids"]) == len(model["item_ids"])
    assert set(model["because_ids"].tolist()) <= {2, 4}
    # the one the item vectors put closest in cosine, as recsys.runtime.explain defines it
    items = bundle.item_index(model["item_ids"])
    want = because(bundle.unit_item_vectors, items[None, :], inputs.user[:1])[0]
    assert model["because_ids"].tolist() == bundle.movie_ids[want].tolist()
    # a popular list has no reason for any movie; with reasons off, no list has any
    assert popular["source"] == "popular" and (popular["because_ids"] == NONE).all()
    assert len(popular["because_ids"]) == len(popular["item_ids"])
    off = score_users(bundle, inputs, "1", "d", explain=False)
    assert all(len(why) == 0 for why in off["because_ids"])
    assert [a.tolist() for a in off["item_ids"]] == [a.tolist() for a in recs["item_ids"]]


def test_the_id_tower_explains_from_the_recent_positives(tiny, tmp_path):
    _, bundle = make_bundle(tiny, tmp_path, tower="id")
    known = int(tiny.users["user_id"].iloc[0])
    today = activity([(known, 2, 5.0, 1), (known, 3, 4.5, 2)])
    recs = score_users(bundle, user_inputs(today, bundle), "1", "d")
    assert recs["source"][0] == "model" and set(recs["because_ids"][0].tolist()) <= {2, 3}
    assert len(recs["because_ids"][0]) == len(recs["item_ids"][0])


def test_inputs_from_stored_histories_match_activity(bundle):
    stored = inputs_from_histories(bundle, [7], [[4, 999, 2]])
    fresh = user_inputs(activity([(7, 4, 5.0, 1), (7, 999, 5.0, 2), (7, 2, 5.0, 3)]), bundle)
    assert stored.user.tolist() == fresh.user.tolist()
    assert stored.personal.tolist() == [True]
    assert inputs_from_histories(bundle, [8], [[]]).personal.tolist() == [False]


def test_gate_evaluation_through_the_graph_matches_pytorch(tiny, tmp_path):
    model, bundle = make_bundle(tiny, tmp_path, k=tiny.n_items)
    graph = evaluate_bundle(bundle, tiny, "valid")
    torch_metrics, _ = evaluate_model(model, tiny, "valid")
    for name, value in graph.items():
        assert value == pytest.approx(torch_metrics[name], abs=1e-9), name


def test_list_ranks_and_decisions():
    recs = pd.DataFrame({"user_id": [1, 2], "item_ids": [np.array([5, 6, 7]), np.array([8])]})
    heldout = pd.DataFrame({"user_id": [1, 2, 3], "movie_id": [7, 9, 5]})
    assert list_ranks(recs, heldout, miss=1000).tolist() == [2, 1000, 1000]
    floor = {"MostPop": 0.02}
    assert decide(0.05, floor, None).promote
    assert not decide(0.01, floor, None).promote  # must beat MostPop even as the first version
    assert "MostPop" in decide(0.01, floor, 0.005).reason
    assert not decide(0.02, floor, None).promote  # a tie does not beat it
    assert not decide(0.04, floor, 0.05, champion_version="3").promote
    assert "champion v3" in decide(0.06, floor, 0.05, champion_version="3").reason
    assert decide(0.0, floor, 0.05, force=True).promote
    assert not decide(0.05, {"MostPop": 0.02, "the genre floor": 0.06}, None).promote  # every floor


def test_bundle_refuses_missing_files_and_unknown_formats(bundle, tmp_path):
    bundle = ModelBundle.load(shutil.copytree(bundle.folder, tmp_path / "copy"))  # damaged below
    meta = json.loads((bundle.folder / BUNDLE_FILE).read_text())
    (bundle.folder / BUNDLE_FILE).write_text(json.dumps({**meta, "format": 1}))
    with pytest.raises(DataError, match="format 1"):
        ModelBundle.load(bundle.folder)
    (bundle.folder / "model.onnx").unlink()
    with pytest.raises(DataError, match="model.onnx"):
        ModelBundle.load(bundle.folder)
    with pytest.raises(DataError, match="lacks column"):
        user_inputs(pd.DataFrame({"user_id": [1]}), bundle)
