"""recsys.runtime.fresh: the kernel against a numpy statement of the same rule, ties and seen
movies included."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.runtime.fresh import fresh_tail

pytestmark = pytest.mark.unit


def reference(top, top_scores, own, fresh, slots):  # noqa: ANN001, ANN201
    """The rule in numpy: the first K - slots places stay; the user's best ``slots`` new movies
    not among them, then the rest of the top-K while there is room, merged best first (stable
    sorts: ties to the earlier entry)."""
    head = top.shape[1] - slots
    above = (top[:, :head, None] == fresh[None, None, :]).any(axis=1)
    mine = np.where(above, -np.inf, own).astype(top_scores.dtype)
    best = np.argsort(-mine, axis=1, kind="stable")[:, :slots]
    picked_scores = np.take_along_axis(mine, best, axis=1)
    picked = np.where(np.isfinite(picked_scores), fresh[best], -1)
    rest, rest_scores = top[:, head:], top_scores[:, head:]
    free = ~(rest[:, :, None] == picked[:, None, :]).any(axis=2)
    room = slots - np.isfinite(picked_scores).sum(axis=1, keepdims=True)
    taken = free & (np.cumsum(free, axis=1) <= room)
    items = np.concatenate([picked, rest], axis=1)
    keys = np.concatenate([picked_scores, np.where(taken, rest_scores, -np.inf)], axis=1)
    order = np.argsort(-keys, axis=1, kind="stable")[:, :slots]
    out, out_scores = top.copy(), top_scores.copy()
    out[:, head:] = np.take_along_axis(items, order, axis=1)
    out_scores[:, head:] = np.take_along_axis(keys, order, axis=1)
    return out, out_scores


@pytest.mark.parametrize(
    ("n_items", "n_fresh", "k", "slots"), [(60, 8, 10, 3), (40, 2, 10, 5), (30, 12, 6, 6)]
)
def test_the_kernel_keeps_the_rule(n_items: int, n_fresh: int, k: int, slots: int) -> None:
    rng = np.random.default_rng(n_items)
    # coarse scores make ties; -inf marks seen movies (masked_topk writes it before)
    scores = rng.integers(0, 6, (200, n_items)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    fresh = np.sort(rng.choice(n_items, n_fresh, replace=False))
    own = scores[:, fresh]
    out, out_scores = fresh_tail(top, top_scores, own, fresh, slots)
    want, want_scores = reference(top, top_scores, own, fresh, slots)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(out_scores, want_scores)
    assert (np.diff(np.where(np.isfinite(out_scores), out_scores, -1e9), axis=1) <= 0).all()
    assert out is not top and (out[:, : k - slots] == top[:, : k - slots]).all()


def test_no_slots_or_no_new_movies_leave_the_lists_alone() -> None:
    top = np.array([[3, 1, 2]])
    scores = np.array([[3.0, 2.0, 1.0]], dtype=np.float32)
    for own, fresh, slots in ((np.zeros((1, 0), np.float32), np.array([], np.int64), 2), (scores, top[0], 0)):
        out, out_scores = fresh_tail(top, scores, own, fresh, slots)
        assert out.tolist() == top.tolist() and out_scores.tolist() == scores.tolist()


def test_masked_topk_applies_the_rule_to_each_row_as_it_goes() -> None:
    """Nightly scoring's one pass (top-K, then the new movies' places, per row) equals the top-K
    then :func:`fresh_tail` on the masked scores."""
    from recsys.runtime.topk import masked_topk

    rng = np.random.default_rng(7)
    scores = rng.standard_normal((300, 500)).astype(np.float32)
    scores[:, 480:] -= 2.0  # new movies score lower: most would miss the top 20 without slots
    seen = [rng.choice(500, rng.integers(0, 30), replace=False) for _ in range(300)]
    fresh = np.arange(480, 500)
    masked = scores.copy()
    top, top_scores = masked_topk(masked, seen, 20)
    want, want_scores = fresh_tail(top, top_scores, masked[:, fresh], fresh, 4)
    got, got_scores = masked_topk(scores.copy(), seen, 20, fresh=fresh, slots=4)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_scores, want_scores)
    assert (np.isin(got[:, 16:], fresh).sum(axis=1) >= 1).all() and not (top[:, :16] != got[:, :16]).any()
    with pytest.raises(ValueError, match="fresh item indices"):
        masked_topk(scores.copy(), seen, 20, fresh=np.array([500]), slots=2)
    with pytest.raises(ValueError, match="repeat"):
        masked_topk(scores.copy(), seen, 20, fresh=np.array([480, 480]), slots=2)
    with pytest.raises(ValueError, match="repeat"):
        fresh_tail(top, top_scores, masked[:, [480, 480]], np.array([480, 480]), 2)
