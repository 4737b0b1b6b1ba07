"""The fused masked top-K kernel equals a full stable sort of the masked scores, cut at K."""

import numpy as np
import pytest

from recsys.runtime.topk import BLOCK, masked_topk

pytestmark = pytest.mark.unit


def reference(scores: np.ndarray, seen: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Float32 reference: mask, stable descending sort (ties -> lower index), first k."""
    masked = scores.copy()
    for row, items in enumerate(seen):
        masked[row, items[(items >= 0) & (items < scores.shape[1])]] = -np.inf
    order = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(masked, order, axis=1)


@pytest.mark.parametrize(
    ("n_items", "k"), [(26_744, 100), (3_001, 100), (150, 100), (40, 40), (BLOCK * 5, 7), (1, 1)]
)
def test_equals_the_float32_reference(n_items, k):
    rng = np.random.default_rng(n_items)
    users, items = rng.normal(size=(64, 16)), rng.normal(size=(n_items, 16))
    scores = (users @ items.T).astype(np.float32)
    seen = [
        rng.choice(n_items, size=rng.integers(0, min(n_items, 300) + 1), replace=False) for _ in range(64)
    ]
    want_idx, want_val = reference(scores, seen, k)
    for threads in (None, 1):  # every core, or one (a shard beside others)
        idx, val = masked_topk(scores.copy(), seen, k, threads)
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_array_equal(val, want_val)


def test_ties_go_to_the_lower_index_and_seen_everything_ends_in_minus_inf():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(8, 1000)).astype(np.float32)  # massive ties
    seen = [np.arange(0, 1000, 3)] * 7 + [np.arange(1000)]  # the last user saw everything
    want_idx, want_val = reference(scores, seen, 50)
    idx, val = masked_topk(scores.copy(), seen, 50)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(val, want_val)
    assert np.isneginf(val[-1]).all()


@pytest.mark.parametrize("k", [1, 100, 1000])
def test_equal_scores_signed_zeros_and_seen_blocks_follow_the_reference(k):
    """Paths off the common one: value ties, -0.0 next to +0.0, rows whose blocks are all seen."""
    rng = np.random.default_rng(k)
    n_items = 3_001
    scores = rng.normal(size=(6, n_items)).astype(np.float32)
    scores[0] = 1.5  # every score equal: the threshold admits the whole row
    scores[1] = np.where(rng.random(n_items) < 0.5, np.float32(-0.0), np.float32(0.0))
    scores[2, ::2] = -0.0
    scores[3] = np.round(scores[3])  # few distinct values, many ties at the cut
    seen = [
        np.array([], np.int64),
        rng.choice(n_items, 100, replace=False),
        np.arange(1, n_items, 2),
        np.arange(0, n_items, 5),
        np.arange(n_items - 3),
        np.arange(0, n_items, 2),
    ]
    want_idx, want_val = reference(scores, seen, k)
    idx, val = masked_topk(scores.copy(), seen, k)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(val, want_val)


def test_out_of_range_seen_entries_are_ignored_and_scores_are_masked_in_place():
    scores = np.arange(10, dtype=np.float32)[None, :].repeat(2, axis=0)
    idx, val = masked_topk(scores, [np.array([9, 10, -1, 11]), np.array([], dtype=np.int64)], 3)
    assert idx.tolist() == [[8, 7, 6], [9, 8, 7]]
    assert val.tolist() == [[8.0, 7.0, 6.0], [9.0, 8.0, 7.0]]
    assert np.isneginf(scores[0, 9])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="float32"):
        masked_topk(np.zeros((2, 5)), [np.array([])] * 2, 1)
    with pytest.raises(ValueError, match="k must be in 1..5"):
        masked_topk(np.zeros((2, 5), np.float32), [np.array([])] * 2, 6)
    with pytest.raises(ValueError, match="seen lists"):
        masked_topk(np.zeros((2, 5), np.float32), [np.array([])], 1)
