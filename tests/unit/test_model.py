"""The two-tower model, its losses and its training loop on tiny data with a known answer."""

import numpy as np
import pytest
import torch

from recsys.config import ModelConfig, load_settings
from recsys.errors import ConfigError
from recsys.models.two_tower.evaluation import evaluate_model
from recsys.models.two_tower.loss import full_softmax_loss, sampled_softmax_loss
from recsys.models.two_tower.model import TwoTower, checkpoint, from_checkpoint
from recsys.models.two_tower.sequences import build_histories, window_examples
from recsys.models.two_tower.training import NegativeSampler, train, uses_full_softmax

pytestmark = pytest.mark.unit


def settings(*extra):
    return load_settings(
        [
            "train.progress_bar=false",
            "train.batch_size=16",
            "train.max_epochs=25",
            "train.learning_rate=0.02",
            "train.patience=30",
            "model.embedding_dim=16",
            "model.history_length=8",
            "model.dropout=0.0",
            *extra,
        ],
        env={},
    )


def sasrec(n_items=10, **kw):
    cfg = ModelConfig(item_tower="id", embedding_dim=8, history_length=5, dropout=0.0, **kw)
    return TwoTower(4, n_items, cfg).eval()


def test_sasrec_is_causal_and_ignores_padding():
    torch.manual_seed(0)
    model = sasrec()
    pad = model.n_items
    history = torch.tensor([[pad, 1, 2, 3, 4]])
    with torch.no_grad():
        base = model.sequence_vectors(history)
        later = model.sequence_vectors(torch.tensor([[pad, 1, 2, 3, 7]]))
    # changing the newest item changes only the last position: position t reads items <= t
    assert torch.allclose(base[0, :4], later[0, :4], atol=1e-6)
    assert not torch.allclose(base[0, 4], later[0, 4])
    # the user vector is the last position, and the padding row embeds to zero
    with torch.no_grad():
        assert torch.allclose(model.user_vectors(history=history), base[:, -1])
        assert model.item_emb.weight[pad].abs().sum() == 0
    # left padding is invisible: the same items without it give the same outputs (positions
    # count from the right, so they line up)
    with torch.no_grad():
        padded = model.sequence_vectors(torch.tensor([[pad, pad, 1, 2, 3]]))[:, 2:]
        bare = model.sequence_vectors(torch.tensor([[1, 2, 3]]))
    assert torch.allclose(padded, bare, atol=1e-5)


def test_mean_tower_prefix_means():
    model = TwoTower(
        2, 6, ModelConfig(item_tower="id", embedding_dim=4, user_tower="mean", history_length=3)
    ).eval()
    with torch.no_grad():
        out = model.sequence_vectors(torch.tensor([[6, 1, 2]]))
        expected = model.project(model.item_emb.weight[[1, 2]].mean(0))
    assert torch.allclose(out[0, -1], expected, atol=1e-6)


def test_id_tower_needs_user_idx_and_history_towers_need_history():
    with pytest.raises(ValueError, match="needs a history"):
        sasrec().user_vectors(user_idx=torch.tensor([0]))
    with pytest.raises(ValueError, match="needs user_idx"):
        TwoTower(2, 5, ModelConfig(item_tower="id", user_tower="id")).user_vectors(
            history=torch.zeros(1, 3).long()
        )


def test_sampled_softmax_masks_accidental_hits_and_bad_hard_negatives():
    model = TwoTower(
        3, 5, ModelConfig(item_tower="id", embedding_dim=4, user_tower="id", logq_correction=False)
    )
    queries, targets = model.user_vectors(torch.tensor([0, 1, 2])), torch.tensor([1, 1, 3])
    hard = torch.tensor([[1, 5, 2], [0, 0, 4], [3, 2, 5]])  # own target / pad must not count
    loss = sampled_softmax_loss(
        model, queries, targets, torch.tensor([1, 4]), torch.log(torch.full((2,), 0.2)), hard
    )
    assert torch.isfinite(loss)
    # the same loss by hand: row 0 keeps columns {own 0, in-batch 2, sampled 4, hard 2}
    with torch.no_grad():
        items = model.item_vectors()
        row = queries[0] @ items[[1, 3, 4, 2]].T
        expected0 = -torch.log_softmax(row, 0)[0]
        row1 = queries[1] @ items[[1, 3, 4, 0, 0, 4]].T
        expected1 = -torch.log_softmax(row1, 0)[0]
        row2 = queries[2] @ items[[3, 1, 1, 1, 4, 2]].T
        expected2 = -torch.log_softmax(row2, 0)[0]
    assert float(loss.detach()) == pytest.approx(float((expected0 + expected1 + expected2) / 3), rel=1e-5)


def test_logq_correction_lowers_popular_items_logits():
    log_prob = torch.log(torch.tensor([0.7, 0.1, 0.1, 0.1]))
    plain = TwoTower(
        2, 4, ModelConfig(item_tower="id", embedding_dim=4, user_tower="id", logq_correction=False), log_prob
    )
    fixed = TwoTower(
        2, 4, ModelConfig(item_tower="id", embedding_dim=4, user_tower="id", logq_correction=True), log_prob
    )
    fixed.load_state_dict(plain.state_dict())
    queries, targets = plain.user_vectors(torch.tensor([0, 1])), torch.tensor([0, 1])
    with torch.no_grad():
        # with logQ, row 1's negative (popular item 0) is pushed down, so row 1's loss is lower
        # iff the item-0 logit shrank by log(0.7/0.1) relative to the own column
        a = sampled_softmax_loss(plain, queries, targets)
        b = sampled_softmax_loss(fixed, queries, targets)
    assert float(a) != pytest.approx(float(b))
    logits = queries @ plain.item_vectors(targets).T
    corrected = logits - (plain.item_log_prob[targets] + np.log(2))
    manual = torch.nn.functional.cross_entropy(corrected, torch.arange(2))
    assert float(b) == pytest.approx(float(manual), rel=1e-5)


def test_full_softmax_distillation_adds_the_teacher_term():
    model = TwoTower(3, 6, ModelConfig(item_tower="id", embedding_dim=4, user_tower="id"))
    queries, targets = model.user_vectors(torch.tensor([0, 1])), torch.tensor([2, 3])
    teacher = torch.randn(2, 6)
    plain = full_softmax_loss(model, queries, targets)
    with_teacher = full_softmax_loss(model, queries, targets, teacher, distill_weight=1.0)
    with torch.no_grad():
        log_p = (queries @ model.item_vectors().T).log_softmax(1)
        kl = torch.nn.functional.kl_div(log_p, teacher.softmax(1), reduction="batchmean")
    assert float(with_teacher - plain) == pytest.approx(float(kl), rel=1e-4)


def test_teacher_scores_are_prefix_sums_with_the_prefix_masked():
    from recsys.models.two_tower.training import teacher_scores

    pairs = np.array([[0, i] for i in (0, 1, 2, 3, 4)])
    ex = window_examples(pairs, n_items=6, length=2)  # windows: [2,3]->[3,4], [0,1]->[1,2]
    teacher = torch.cat([torch.randn(6, 6), torch.zeros(1, 6)])  # pad row zero
    ex.attach_teacher_base(teacher)
    scores = teacher_scores(ex, torch.tensor([0]), teacher)[0]  # the window reading items 2, 3
    # position 1 reads items 0, 1 (before the window), 2, 3: their rows summed, themselves masked
    expected = teacher[[0, 1, 2, 3]].sum(0)
    assert torch.isinf(scores[1, :4]).all() and (scores[1, :4] < 0).all()
    assert torch.allclose(scores[1, 4:], expected[4:])
    assert torch.allclose(scores[0, 3:], teacher[[0, 1, 2]].sum(0)[3:])
    assert torch.isfinite(scores[0, 3]) and torch.isinf(scores[0, 2])


def test_negative_sampler_follows_count_power():
    gen = torch.Generator().manual_seed(0)
    sampler = NegativeSampler(np.array([1.0, 16.0]), "popularity", gen)
    items, log_q = sampler.draw(20_000)
    share = float((items == 1).float().mean())
    assert share == pytest.approx(8 / 9, abs=0.01)  # 16^0.75 = 8
    assert torch.allclose(log_q[items == 1][:1], torch.log(torch.tensor([8 / 9])), atol=1e-6)
    uniform, _ = NegativeSampler(np.array([1.0, 16.0]), "uniform", gen).draw(20_000)
    assert float((uniform == 1).float().mean()) == pytest.approx(0.5, abs=0.02)


def test_windows_cover_every_target_once():
    pairs = np.array([[0, i] for i in range(7)] + [[1, 3], [1, 4]])
    ex = window_examples(pairs, n_items=9, length=3)
    targets = {(int(u), int(t)) for u, row in zip(ex.users, ex.targets) for t in row if t != 9}
    assert targets == {(0, i) for i in range(1, 7)} | {(1, 4)}
    assert int(ex.n_targets.sum()) == 7
    # each target is predicted from the items before it, right-aligned
    assert ex.inputs[0].tolist() == [3, 4, 5] and ex.targets[0].tolist() == [4, 5, 6]
    assert ex.inputs[1].tolist() == [0, 1, 2] and ex.targets[1].tolist() == [1, 2, 3]
    assert ex.before[0].tolist() == [0, 1, 2]


def test_softmax_mode_resolves_on_catalogue_size():
    s = load_settings(["model.full_softmax_max_items=100"], env={})
    assert uses_full_softmax(s, 100) and not uses_full_softmax(s, 101)
    assert not uses_full_softmax(load_settings(["model.softmax=sampled"], env={}), 10)


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["model.user_tower=mean"],
        ["model.item_tower=id", "model.softmax=sampled", "model.num_sampled_negatives=8"],
        [
            "model.item_tower=id",
            "model.softmax=sampled",
            "model.negative_distribution=popularity",
            "model.num_sampled_negatives=8",
        ],
        ["train.distill_weight=0.5", "train.distill_ease_l2=10"],
        ["model.user_tower=id", "model.softmax=sampled", "train.batch_size=64"],
    ],
)
def test_loss_decreases_and_learns_the_checkerboard(tiny, extra):
    result = train(tiny, settings(*extra))
    losses = [row["loss"] for row in result.epochs]
    assert losses[-1] < losses[0] * 0.9
    # users of each parity rank their held-out item far better than chance (~half the catalogue)
    metrics, ranks = evaluate_model(result.model, tiny, "test")
    assert np.median(ranks) < tiny.n_items / 4
    assert metrics["recall_at_10"] > 0.5


def test_hard_negatives_train_and_bad_combinations_are_refused(tiny):
    rng = np.random.default_rng(0)
    hard = rng.integers(0, tiny.n_items, size=(tiny.n_users, 5))
    result = train(
        tiny,
        settings("model.softmax=sampled", "model.num_sampled_negatives=8", "train.hard_negative_ratio=0.5"),
        hard_lists=hard,
    )
    assert result.epochs[-1]["loss"] < result.epochs[0]["loss"]
    with pytest.raises(ConfigError, match="needs model.softmax=sampled"):
        train(tiny, settings("train.hard_negative_ratio=0.5"), hard_lists=hard)
    with pytest.raises(ConfigError, match="history tower with the full softmax"):
        train(tiny, settings("train.distill_weight=0.5", "model.user_tower=id"))


def test_training_is_reproducible(tiny):
    a = train(tiny, settings("train.max_epochs=3"))
    b = train(tiny, settings("train.max_epochs=3"))
    assert [r["loss"] for r in a.epochs] == [r["loss"] for r in b.epochs]
    c = train(tiny, settings("train.max_epochs=3", "train.seed=1"))
    assert [r["loss"] for r in a.epochs] != [r["loss"] for r in c.epochs]


def test_every_position_is_trained_and_max_interactions_caps_an_epoch(tiny):
    train_df = tiny.split("train")
    # every train positive but each user's first is predicted once per epoch
    expected = len(train_df) - train_df["user_idx"].nunique()
    full = train(tiny, settings("train.max_epochs=1"))
    assert full.epochs[0]["pairs"] == expected
    capped = train(tiny, settings("train.max_epochs=2", "train.max_interactions=64"))
    assert all(0 < row["pairs"] <= 64 for row in capped.epochs)


def test_early_stopping_keeps_the_best_epoch(tiny):
    result = train(tiny, settings("train.max_epochs=30", "train.patience=2"))
    best = max(r["valid_ndcg_at_10"] for r in result.epochs)
    assert result.valid_metrics["ndcg_at_10"] == pytest.approx(best)
    assert len(result.epochs) < 30 or result.best_epoch == 30


def test_checkpoint_round_trip(tiny):
    result = train(tiny, settings("train.max_epochs=2"))
    again = from_checkpoint(checkpoint(result.model))
    history = torch.full((3, 8), tiny.n_items)
    history[:, -1] = torch.tensor([0, 1, 2])
    assert torch.allclose(again.score_all(history=history), result.model.score_all(history=history))


def test_histories_are_left_padded_recent_items():
    pairs = np.array([[0, 1], [0, 2], [0, 3], [1, 4]])
    hist = build_histories(pairs, n_users=3, n_items=9, length=2)
    assert hist.tolist() == [[2, 3], [9, 4], [9, 9]]


def test_bad_sizes_and_settings_raise():
    with pytest.raises(ValueError, match="need >= 1 user"):
        TwoTower(0, 5, ModelConfig(item_tower="id"))
    with pytest.raises(ConfigError, match="divisible by num_heads"):
        load_settings(["model.embedding_dim=10", "model.num_heads=3"], env={})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_matches_the_cpu(tiny):
    """train.device=cuda gives the CPU's results up to float tolerance (no random draws differ:
    no dropout, no hidden ids), and hands back a CPU model."""
    exact = ("model.id_dropout=0", "train.precision=float32", "train.max_epochs=5")
    cpu = train(tiny, settings("train.device=cpu", *exact))
    gpu = train(tiny, settings("train.device=cuda", *exact))
    assert gpu.model.device.type == "cpu"
    for a, b in zip(cpu.epochs, gpu.epochs, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)
        assert b["valid_ndcg_at_10"] == pytest.approx(a["valid_ndcg_at_10"], abs=1e-3)


def test_device_and_precision_resolve_against_the_machine():
    from recsys.models.two_tower.hardware import Hardware, native_bfloat16

    cfg = settings().train
    cpu = Hardware.resolve(cfg.model_copy(update={"device": "cpu", "precision": "float32"}))
    assert (cpu.device.type, cpu.dtype) == ("cpu", torch.float32)
    forced = Hardware.resolve(cfg.model_copy(update={"device": "cpu", "precision": "bfloat16"}))
    assert forced.dtype == torch.bfloat16
    auto = Hardware.resolve(cfg.model_copy(update={"device": "cpu", "precision": "auto"}))
    assert auto.dtype == (torch.bfloat16 if native_bfloat16(torch.device("cpu")) else torch.float32)
    assert "cpu" in auto.describe()
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="sees no CUDA device"):
            train(None, settings("train.device=cuda"))  # type: ignore[arg-type]
        assert Hardware.resolve(cfg.model_copy(update={"device": "auto"})).device.type == "cpu"


def test_epochs_judged_on_a_sample_of_users_and_the_chosen_one_on_all(tiny):
    result = train(tiny, settings("train.max_epochs=4", "train.valid_users=3"))
    assert result.valid_metrics == evaluate_model(result.model, tiny, "valid")[0]
    from recsys.models.two_tower.evaluation import Evaluation

    assert len(Evaluation(result.model, tiny, "valid", users=3).heldout) == 3
    assert len(Evaluation(result.model, tiny, "valid", users=10_000).heldout) == tiny.meta["n_valid"]
