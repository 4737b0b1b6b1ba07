"""The last places of each top-K list kept for movies new since training (``score.fresh_slots``):
:func:`fresh_tail`, a numba kernel run after the masked top-K (recsys.runtime.topk).

Per list it reads the K places and the scores of the F new movies, and costs O(K + slots x F):
about 0.8 us a user for 100 new movies and 5 slots, next to the MatMul's ~17 us
(benchmarks/speed.py measures it). One thread, one scratch set for every list: a list's work is a
few hundred compares, less than spreading lists over threads or allocating per list would cost
(0.64 ms a batch of 256 that way, 0.21 ms this way). tests/unit/test_fresh.py checks it against
a numpy statement of the same rule.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _best(keys: np.ndarray, used: np.ndarray) -> int:
    """The index of the largest unused key, ties to the lower index (a stable descending sort's
    next entry); marks it used."""
    best = -1
    for j in range(len(keys)):
        if not used[j] and (best < 0 or keys[j] > keys[best]):
            best = j
    used[best] = True
    return best


@njit(cache=True, nogil=True)
def _fresh_tail(top, top_scores, own, fresh, position, slots, out, out_scores):  # noqa: ANN001
    n, k = top.shape
    n_fresh, head = own.shape[1], k - slots
    picks = min(slots, n_fresh)
    # one scratch set for every row (a row's work is a few hundred compares: allocating, or
    # spreading rows over threads, would cost more than the work)
    mine = np.empty(n_fresh, dtype=own.dtype)
    used = np.zeros(n_fresh, dtype=np.bool_)
    items = np.empty(picks + slots, dtype=top.dtype)
    keys = np.empty(picks + slots, dtype=top_scores.dtype)
    chosen = np.zeros(picks + slots, dtype=np.bool_)
    for b in range(n):
        mine[:] = own[b]
        used[:] = False
        chosen[:] = False
        for j in range(head):  # a new movie already above the kept places keeps its place
            item = top[b, j]
            if 0 <= item < len(position) and position[item] >= 0:
                mine[position[item]] = -np.inf
        found = 0
        for s in range(picks):  # the user's best new movies
            f = _best(mine, used)
            keys[s] = mine[f]
            finite = np.isfinite(mine[f])
            items[s] = fresh[f] if finite else -1
            found += finite
        room = slots - found
        for s in range(slots):  # then the rest of the top-K, as long as there is room
            item = top[b, head + s]
            free = True
            for p in range(picks):
                if items[p] == item:
                    free = False
            items[picks + s] = item
            taken = free and room > 0
            room -= free
            keys[picks + s] = top_scores[b, head + s] if taken else -np.inf
        for s in range(slots):  # merged best first
            p = _best(keys, chosen)
            out[b, head + s] = items[p]
            out_scores[b, head + s] = keys[p]


def fresh_tail(
    top: np.ndarray, top_scores: np.ndarray, own: np.ndarray, fresh: np.ndarray, slots: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's top-K ([B, K], best first) with its last ``slots`` places kept for the user's
    best ``fresh`` movies (scores ``own`` [B, F], -inf for a seen one) that are not above those
    places: the first K - slots stay, then those movies and, in the places they leave, the rest of
    the top-K, merged best first. They score no higher than the first K - slots (or they would be
    among them), so the list stays best first; a place without a movie is -1 with score -inf."""
    out, out_scores = top.copy(), top_scores.copy()
    slots = min(slots, top.shape[1])
    if not slots or not len(fresh) or not len(top):
        return out, out_scores
    fresh = np.asarray(fresh, dtype=top.dtype)
    position = np.full(int(fresh.max()) + 1, -1, dtype=np.int64)  # item_idx -> column of ``own``
    position[fresh] = np.arange(len(fresh))
    own = np.ascontiguousarray(own, dtype=top_scores.dtype)
    _fresh_tail(top, top_scores, own, fresh, position, slots, out, out_scores)
    return out, out_scores
