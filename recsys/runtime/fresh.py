"""The last places of each top-K list kept for movies new since training (``score.fresh_slots``):
the rule, per list, as a numba function (:func:`fresh_row`).

Nightly scoring runs it inside the masked top-K kernel (recsys.runtime.topk.masked_topk with
``fresh``), on each score row while the row is still in cache: reading the new movies' scores
from a row gone cold cost more than the rule itself. :func:`fresh_tail` applies it to lists and
scores already computed (benchmarks/fresh_slots.py). Per list it costs O(K + slots x F), small
next to the list's share of the MatMul (benchmarks/speed.py measures both).
tests/unit/test_fresh.py checks both paths against a numpy statement of the rule.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
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
def fresh_row(row, cols, fresh, position, slots, idx, val, mine, used, items, keys, chosen) -> None:  # noqa: ANN001
    """One list: ``idx``/``val`` [K] (best first) get their last ``slots`` places kept for the new
    movies ``fresh`` [F] (item_idx), whose scores are ``row[cols]`` (-inf: seen). ``position``
    maps an item_idx to its place in ``fresh`` (-1: not new). ``mine`` [F], ``used`` [F],
    ``items``, ``keys`` and ``chosen`` [min(slots, F) + slots] are scratch."""
    n_fresh, head = len(fresh), len(idx) - slots
    picks = min(slots, n_fresh)
    for f in range(n_fresh):
        mine[f] = row[cols[f]]
        used[f] = False
    for j in range(head):  # a new movie already above the kept places keeps its place
        item = idx[j]
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
        item = idx[head + s]
        free = True
        for p in range(picks):
            if items[p] == item:
                free = False
        items[picks + s] = item
        taken = free and room > 0
        room -= free
        keys[picks + s] = val[head + s] if taken else -np.inf
    for p in range(picks + slots):
        chosen[p] = False
    for s in range(slots):  # merged best first
        p = _best(keys, chosen)
        idx[head + s] = items[p]
        val[head + s] = keys[p]


def positions(fresh: np.ndarray) -> np.ndarray:
    """item_idx -> its place in ``fresh`` (-1: not new): [max(fresh) + 1] int64. ValueError when
    an index repeats (the movie would take two places) or is negative."""
    if len(fresh) and fresh.min() < 0:
        raise ValueError(f"fresh item indices must be >= 0, got {int(fresh.min())}")
    if len(np.unique(fresh)) != len(fresh):
        raise ValueError("fresh item indices repeat; give each new movie once")
    out = np.full(int(fresh.max()) + 1 if len(fresh) else 0, -1, dtype=np.int64)
    out[fresh] = np.arange(len(fresh))
    return out


@njit(cache=True, nogil=True)
def _fresh_tail(own, fresh, position, slots, out, out_scores) -> None:  # noqa: ANN001
    n_fresh = len(fresh)
    picks = min(slots, n_fresh)
    cols = np.arange(n_fresh)
    mine, used = np.empty(n_fresh, dtype=own.dtype), np.empty(n_fresh, dtype=np.bool_)
    items = np.empty(picks + slots, dtype=out.dtype)
    keys = np.empty(picks + slots, dtype=out_scores.dtype)
    chosen = np.empty(picks + slots, dtype=np.bool_)
    for b in range(out.shape[0]):
        fresh_row(own[b], cols, fresh, position, slots, out[b], out_scores[b], mine, used, items, keys,
                  chosen)  # fmt: skip


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
    own = np.ascontiguousarray(own, dtype=top_scores.dtype)
    _fresh_tail(own, fresh, positions(fresh), slots, out, out_scores)
    return out, out_scores
