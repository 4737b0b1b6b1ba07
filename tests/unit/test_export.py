"""ONNX export: parity with PyTorch (top-K overlap >= 99.9 %, scores within 1e-4), seen items masked."""

import numpy as np
import pytest
import torch

from recsys.data import seen_lists
from recsys.export import TopKRetrieval, export_onnx, pad_lists
from recsys.model import TwoTower
from recsys.config import ModelConfig
from recsys.scoring import OnnxRetriever, score_users
from recsys.training import serving_histories

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("tower", ["id", "history"])
def test_onnx_matches_pytorch(tmp_path, tower):
    torch.manual_seed(0)
    n_users, n_items, k = 300, 500, 50
    cfg = ModelConfig(embedding_dim=16, user_tower=tower, history_length=6)
    model = TwoTower(n_users, n_items, cfg).eval()
    rng = np.random.default_rng(0)
    seen = [rng.choice(n_items, size=rng.integers(0, 40), replace=False) for _ in range(n_users)]
    history = torch.from_numpy(rng.integers(0, n_items + 1, size=(n_users, 6)))
    hist = history if tower == "history" else None
    path = export_onnx(model, tmp_path / "m.onnx", k)
    users = np.arange(n_users)
    onnx_idx, onnx_scores = OnnxRetriever(path, n_items).recommend(
        users, seen, None if hist is None else hist.numpy())
    with torch.no_grad():
        ref_idx, ref_scores = TopKRetrieval(model, k)(torch.from_numpy(users),
                                                      torch.from_numpy(pad_lists(seen, n_items)), hist)
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(onnx_idx, ref_idx.numpy())])
    assert overlap >= 0.999
    assert np.abs(onnx_scores - ref_scores.numpy()).max() < 1e-4
    # seen items never come back, and lists are sorted best first
    assert not any(set(onnx_idx[u]) & set(seen[u]) for u in range(n_users))
    assert (np.diff(onnx_scores, axis=1) <= 0).all()
    # and the scores are the plain dot products of the two towers
    with torch.no_grad():
        full = model.score_all(torch.from_numpy(users), hist).numpy()
    np.testing.assert_allclose(onnx_scores[:, 0], full[users, onnx_idx[:, 0]], atol=1e-4)


def test_batch_equals_single_user_rows(tmp_path, tiny):
    model = TwoTower(tiny.n_users, tiny.n_items, ModelConfig(embedding_dim=8)).eval()
    path = export_onnx(model, tmp_path / "m.onnx", 10)
    retriever = OnnxRetriever(path, tiny.n_items)
    rated = seen_lists(tiny.rated, tiny.n_users)
    users = np.arange(tiny.n_users)
    recs = score_users(retriever, users, tiny.users["user_id"].to_numpy(), rated,
                       tiny.catalogue["movie_id"].to_numpy(), "7", batch_size=7)
    assert len(recs) == tiny.n_users and (recs["model_version"] == "7").all()
    one = score_users(retriever, users[3:4], tiny.users["user_id"].to_numpy()[3:4], rated,
                      tiny.catalogue["movie_id"].to_numpy(), "7")
    assert one["item_ids"][0].tolist() == recs["item_ids"][3].tolist()
    rated_movies = set(tiny.rated[tiny.rated["user_idx"] == 3]["movie_id"])
    assert not set(recs["item_ids"][3]) & rated_movies


def test_fully_seen_users_get_no_masked_items(tmp_path):
    model = TwoTower(2, 5, ModelConfig(embedding_dim=4)).eval()
    path = export_onnx(model, tmp_path / "m.onnx", 5)
    recs = score_users(OnnxRetriever(path, 5), np.array([0, 1]), np.array([10, 11]),
                       [np.array([0, 1, 2, 3]), np.array([], dtype=int)], np.arange(100, 105), "1")
    assert recs["item_ids"][0].tolist() == [104]  # only the unseen item survives
    assert len(recs["item_ids"][1]) == 5


def test_k_larger_than_catalogue_is_rejected():
    with pytest.raises(ValueError, match="k must be in"):
        TopKRetrieval(TwoTower(2, 5, ModelConfig(embedding_dim=4)), 6)
