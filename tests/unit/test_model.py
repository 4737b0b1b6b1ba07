"""The two-tower model and its training loop on tiny data with a known answer."""

import numpy as np
import pytest
import torch

from recsys.config import ModelConfig, load_settings
from recsys.model import Batch, TwoTower, checkpoint, from_checkpoint
from recsys.training import build_histories, epoch_sample, evaluate_model, train

pytestmark = pytest.mark.unit


def settings(*extra):
    return load_settings(["train.progress_bar=false", "train.batch_size=64", "train.max_epochs=15",
                          "train.learning_rate=0.05", "train.patience=20", *extra], env={})


def test_forward_shapes_and_accidental_hits_masked():
    model = TwoTower(3, 5, ModelConfig(embedding_dim=4, logq_correction=False))
    batch = Batch(torch.tensor([0, 1, 2]), torch.tensor([1, 1, 3]))
    logits, loss = model(batch, sampled=torch.tensor([0, 4]))
    assert logits.shape == (3, 5)
    # row 0's positive is item 1; column 1 is row 1's copy of item 1 -> not a negative
    assert torch.isinf(logits[0, 1]) and torch.isinf(logits[1, 0])
    assert torch.isfinite(logits[0, 0]) and torch.isfinite(loss)


def test_logq_correction_lowers_popular_items_logits():
    log_prob = torch.log(torch.tensor([0.7, 0.1, 0.1, 0.1]))
    plain = TwoTower(2, 4, ModelConfig(embedding_dim=4, logq_correction=False), log_prob)
    corrected = TwoTower(2, 4, ModelConfig(embedding_dim=4, logq_correction=True), log_prob)
    corrected.load_state_dict(plain.state_dict())
    batch = Batch(torch.tensor([0, 1]), torch.tensor([0, 1]))
    with torch.no_grad():
        diff = plain(batch)[0] - corrected(batch)[0]
    # the correction lowers the popular item's logit more than the rare item's
    assert diff[0, 0] > diff[0, 1]
    assert float(diff[0, 0] - diff[0, 1]) == pytest.approx(float(np.log(0.7) - np.log(0.1)), abs=1e-5)


@pytest.mark.parametrize("extra", [
    [],
    ["model.logq_correction=false"],
    ["model.num_sampled_negatives=16"],
    ["model.user_tower=history", "model.history_length=8"],
])
def test_loss_decreases_and_learns_the_checkerboard(tiny, extra):
    result = train(tiny, settings(*extra))
    losses = [row["loss"] for row in result.epochs]
    assert losses[-1] < losses[0] * 0.9
    # users of each parity should rank their held-out item far better than chance (~half the catalogue)
    metrics, ranks = evaluate_model(result.model, tiny, "test")
    assert np.median(ranks) < tiny.n_items / 4
    assert metrics["recall_at_10"] > 0.5


def test_training_is_reproducible(tiny):
    a = train(tiny, settings("train.max_epochs=3"))
    b = train(tiny, settings("train.max_epochs=3"))
    assert [r["loss"] for r in a.epochs] == [r["loss"] for r in b.epochs]
    c = train(tiny, settings("train.max_epochs=3", "train.seed=1"))
    assert [r["loss"] for r in a.epochs] != [r["loss"] for r in c.epochs]


def test_max_interactions_caps_each_epoch(tiny):
    n_train = len(tiny.split("train"))
    full = train(tiny, settings("train.max_epochs=1"))
    capped = train(tiny, settings("train.max_epochs=2", "train.max_interactions=64"))
    assert full.epochs[0]["pairs"] == n_train
    assert [row["pairs"] for row in capped.epochs] == [64, 64]


def test_epoch_sample_is_fresh_and_not_the_first_rows():
    gen = torch.Generator().manual_seed(0)
    first, second = epoch_sample(1000, 100, gen), epoch_sample(1000, 100, gen)
    assert len(first) == len(set(first.tolist())) == 100
    assert set(first.tolist()) != set(second.tolist())
    assert set(first.tolist()) != set(range(100))
    assert sorted(epoch_sample(50, 100, gen).tolist()) == list(range(50))


def test_early_stopping_keeps_the_best_epoch(tiny):
    result = train(tiny, settings("train.max_epochs=30", "train.patience=2"))
    best = max(r["valid_ndcg_at_10"] for r in result.epochs)
    assert result.valid_metrics["ndcg_at_10"] == pytest.approx(best)
    assert len(result.epochs) < 30 or result.best_epoch == 30


def test_checkpoint_round_trip(tiny):
    result = train(tiny, settings("train.max_epochs=2"))
    again = from_checkpoint(checkpoint(result.model))
    users = torch.arange(tiny.n_users)
    assert torch.allclose(again.score_all(users), result.model.score_all(users))


def test_histories_are_left_padded_recent_items():
    pairs = np.array([[0, 1], [0, 2], [0, 3], [1, 4]])
    hist = build_histories(pairs, n_users=3, n_items=9, length=2)
    assert hist.tolist() == [[2, 3], [9, 4], [9, 9]]


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="need >= 1 user"):
        TwoTower(0, 5, ModelConfig())
