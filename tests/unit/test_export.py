"""ONNX export: parity with PyTorch (top-K overlap >= 99.9 %, scores within 1e-4), seen items masked."""

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.config import ModelConfig
from recsys.data.features import Vocabulary
from recsys.models.two_tower.export import TopKRetrieval, export_onnx, export_scoring, input_name
from recsys.models.two_tower.model import TwoTower
from recsys.runtime.two_tower import FastRetriever, OnnxRetriever, pad_lists

pytestmark = pytest.mark.unit


def content_model(n_users: int, n_items: int, cfg: ModelConfig) -> TwoTower:
    """A content item tower over a made-up catalogue (genres, years, title words, tags)."""
    rng = np.random.default_rng(5)
    genres = ["Comedy", "Drama", "Horror", "Action"]
    catalogue = pd.DataFrame(
        {
            "title": [
                f"{rng.choice(['Night', 'Day', 'Love'])} {i} ({1950 + i % 70})" for i in range(n_items)
            ],
            "genres": ["|".join(rng.choice(genres, size=2, replace=False)) for _ in range(n_items)],
            "tags": [rng.choice(["funny", "dark", "funny|dark", ""]) for _ in range(n_items)],
        }
    )
    vocabulary = Vocabulary.fit(catalogue)
    return TwoTower(n_users, n_items, cfg.model_copy(update={"item_tower": "content"}), None, vocabulary,
                    vocabulary.encode(catalogue))  # fmt: skip


@pytest.mark.parametrize("tower", ["sasrec", "mean", "id", "sasrec-content"])
def test_onnx_matches_pytorch(tmp_path, tower):
    torch.manual_seed(0)
    n_users, n_items, k, h = 300, 500, 50, 6
    content = tower.endswith("-content")
    tower = tower.removesuffix("-content")
    cfg = ModelConfig(item_tower="id", embedding_dim=16, user_tower=tower, history_length=h)
    model = (content_model(n_users, n_items, cfg) if content else TwoTower(n_users, n_items, cfg)).eval()
    rng = np.random.default_rng(0)
    seen = [rng.choice(n_items, size=rng.integers(0, 40), replace=False) for _ in range(n_users)]
    # left-padded histories of every length 1..h (an empty history is never scored: it gets
    # the popular list, see recsys.runtime.scoring)
    history = np.full((n_users, h), n_items)
    for u in range(n_users):
        n = 1 + u % h
        history[u, h - n :] = rng.integers(0, n_items, size=n)
    user = history if tower != "id" else np.arange(n_users)
    path = export_onnx(model, tmp_path / "m.onnx", k)
    retriever = OnnxRetriever(path, n_items)
    assert retriever.user_input == input_name(model) == ("user_idx" if tower == "id" else "history")
    onnx_idx, onnx_scores = retriever.recommend(user, seen)
    with torch.no_grad():
        ref_idx, ref_scores = TopKRetrieval(model, k)(
            torch.from_numpy(user), torch.from_numpy(pad_lists(seen, n_items))
        )
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(onnx_idx, ref_idx.numpy())])
    assert overlap >= 0.999
    assert np.abs(onnx_scores - ref_scores.numpy()).max() < 1e-4
    # seen items never come back, and lists are sorted best first
    assert not any(set(onnx_idx[u]) & set(seen[u]) for u in range(n_users))
    assert (np.diff(onnx_scores, axis=1) <= 0).all()
    # and the scores are the plain dot products of the two towers
    with torch.no_grad():
        t = torch.from_numpy(user)
        full = (model.score_all(history=t) if tower != "id" else model.score_all(user_idx=t)).numpy()
    np.testing.assert_allclose(onnx_scores[:, 0], full[np.arange(n_users), onnx_idx[:, 0]], atol=1e-4)


def test_batch_size_does_not_change_a_row(tmp_path):
    torch.manual_seed(1)
    model = TwoTower(5, 40, ModelConfig(item_tower="id", embedding_dim=8, history_length=4)).eval()
    retriever = OnnxRetriever(export_onnx(model, tmp_path / "m.onnx", 10), 40)
    history = np.array([[40, 1, 2, 3], [40, 40, 5, 6], [7, 8, 9, 10]])
    seen = [np.array([1, 2]), np.array([], dtype=int), np.array([4])]
    batch_idx, batch_scores = retriever.recommend(history, seen)
    one_idx, one_scores = retriever.recommend(history[1:2], seen[1:2])
    assert one_idx[0].tolist() == batch_idx[1].tolist()
    np.testing.assert_allclose(one_scores[0], batch_scores[1], atol=1e-5)


def test_fully_seen_users_get_masked_tail(tmp_path):
    model = TwoTower(2, 5, ModelConfig(item_tower="id", embedding_dim=4, history_length=2)).eval()
    retriever = OnnxRetriever(export_onnx(model, tmp_path / "m.onnx", 5), 5)
    idx, scores = retriever.recommend(
        np.array([[5, 0], [5, 5]]), [np.array([0, 1, 2, 3]), np.array([], dtype=int)]
    )
    assert idx[0][np.isfinite(scores[0])].tolist() == [4]  # only the unseen item survives
    assert np.isfinite(scores[1]).all()


def test_k_larger_than_catalogue_is_rejected():
    with pytest.raises(ValueError, match="k must be in"):
        TopKRetrieval(TwoTower(2, 5, ModelConfig(item_tower="id", embedding_dim=4)), 6)


@pytest.mark.parametrize("tower", ["sasrec", "id"])
def test_fast_scoring_path_returns_the_end_to_end_graphs_lists(tmp_path, tower):
    """user_tower.onnx + MatMul + fused top-K == the retrieval graph's TopK, exactly."""
    torch.manual_seed(2)
    n_users, n_items, k, h = 200, 3_000, 100, 6
    model = TwoTower(
        n_users, n_items, ModelConfig(item_tower="id", embedding_dim=16, user_tower=tower, history_length=h)
    ).eval()
    rng = np.random.default_rng(2)
    seen = [rng.choice(n_items, size=rng.integers(0, 200), replace=False) for _ in range(n_users)]
    history = rng.integers(0, n_items, size=(n_users, h))
    history[::3, :2] = n_items  # some left padding
    user = history if tower != "id" else np.arange(n_users)
    graph = OnnxRetriever(export_onnx(model, tmp_path / "m.onnx", k), n_items)
    fast = FastRetriever(*export_scoring(model, tmp_path), k)
    want_idx, want_scores = graph.recommend(user, seen)
    idx, scores = fast.recommend(user, seen)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-5)
    # and the float32 reference on the path's own MatMul: a stable sort of the masked scores
    full = fast.scores(fast.user_vectors(user))
    for row, items in enumerate(seen):
        full[row, items] = -np.inf
    order = np.argsort(-full, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_array_equal(scores, np.take_along_axis(full, order, axis=1))
    if tower == "sasrec":  # columns of padding in every row are cut: same lists
        short = history.copy()
        short[:, :4] = n_items
        want_idx, want_scores = graph.recommend(short, seen)
        idx, scores = fast.recommend(short, seen)
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-5)


@pytest.mark.parametrize("tower", ["sasrec", "id"])
def test_batches_in_waves_return_what_each_batch_returns(tmp_path, tower, monkeypatch):
    """recommend_batches (the tower a wave of batches ahead) == recommend batch by batch."""
    import recsys.runtime.two_tower as two_tower

    monkeypatch.setattr(two_tower, "_WAVE_USERS", 64)  # 2 batches a wave: 3 waves and a short batch
    torch.manual_seed(3)
    n_users, n_items, k, h, batch = 150, 400, 20, 6, 32
    cfg = ModelConfig(item_tower="id", embedding_dim=16, user_tower=tower, history_length=h)
    model = TwoTower(n_users, n_items, cfg).eval()
    rng = np.random.default_rng(3)
    seen = [rng.choice(n_items, size=rng.integers(0, 30), replace=False) for _ in range(n_users)]
    history = rng.integers(0, n_items, size=(n_users, h))
    history[: n_users // 2, :3] = n_items  # short histories: their batches are cut
    user = history if tower != "id" else np.arange(n_users)
    graph = OnnxRetriever(export_onnx(model, tmp_path / "m.onnx", k), n_items)
    for retriever in (FastRetriever(*export_scoring(model, tmp_path), k), graph):
        got = list(retriever.recommend_batches(user, seen, batch))
        assert len(got) == -(-n_users // batch)
        for i, (idx, scores) in enumerate(got):
            rows = slice(i * batch, (i + 1) * batch)
            want_idx, want_scores = retriever.recommend(user[rows], seen[rows])
            np.testing.assert_array_equal(idx, want_idx)
            np.testing.assert_array_equal(scores, want_scores)


def test_a_users_vector_does_not_depend_on_who_else_is_in_the_batch(tmp_path):
    """Bit for bit, whatever the batch and however many padding columns it keeps: an incremental
    night's lists equal a full night's (tests/integration/test_chain.py relies on it)."""
    torch.manual_seed(4)
    n_items, h = 300, 50
    model = TwoTower(5, n_items, ModelConfig(item_tower="id", user_tower="sasrec", history_length=h)).eval()
    fast = FastRetriever(*export_scoring(model, tmp_path), 10, threads=1)
    history = np.random.default_rng(4).integers(0, n_items, size=(200, h))
    history[:100, :20] = n_items  # short ones: a batch of these alone is cut to 30 columns
    alone = fast.user_vectors(history[:3])
    np.testing.assert_array_equal(fast.user_vectors(history)[:3], alone)
    np.testing.assert_array_equal(fast.user_vectors(history[:64])[:3], alone)
