"""Exact top-K of every row of a score matrix, with each row's seen items masked: a fused kernel.

ONNX Runtime computes the scores (one MatMul of user vectors against the item matrix); this kernel
then masks the seen items and selects the K best per row, in place and in one pass over memory.
ONNX Runtime's TopK keeps a heap of K indices per row and costs about as much as the MatMul itself
at K=100 over 27k items (benchmarks/speed.py); here each row costs a vectorised pass over the
scores plus work on a few hundred candidates:

1. set the row's seen items to -inf (in place: the score buffer is ours);
2. the maximum of each block of BLOCK consecutive items (a SIMD max reduction);
3. tau = the K-th largest block maximum (a cheap bound, then a quickselect). K blocks hold a score >= tau, so the K-th best score
   is >= tau, and every item of the top K lies in a block whose maximum is >= tau;
4. the candidates: items >= tau of those blocks, in ascending item order;
5. a quickselect of the K-th best candidate, then a stable sort of the K best by descending score.

The result equals a full stable sort of the masked row cut at K - ties go to the lower item index,
as in ONNX Runtime's TopK - so it is exact, not approximate; tests/unit/test_topk.py checks it
against numpy. Rows are spread over threads (numba prange); the kernel compiles on first use and
is cached on disk.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

BLOCK = 32  # items per block maximum: 27k items -> 836 maxima per row


@njit(cache=True, nogil=True, fastmath=True)
def _block_maxima(row: np.ndarray, maxima: np.ndarray) -> None:
    """maxima[b] = max(row[b * BLOCK : (b + 1) * BLOCK]); a fixed-width inner loop vectorises."""
    n = row.shape[0]
    full = n // BLOCK
    for b in range(full):
        start = b * BLOCK
        best = row[start]
        for j in range(1, BLOCK):
            value = row[start + j]
            best = value if value > best else best
        maxima[b] = best
    if full < maxima.shape[0]:
        best = row[full * BLOCK]
        for j in range(full * BLOCK + 1, n):
            best = row[j] if row[j] > best else best
        maxima[full] = best


@njit(cache=True, nogil=True)
def _kth_largest(values: np.ndarray, k: int) -> float:
    """The k-th largest of ``values`` (1 <= k <= len), by quickselect; reorders ``values``."""
    lo, hi, target = 0, values.shape[0] - 1, k - 1  # position in descending order
    while lo < hi:
        pivot = values[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while values[i] > pivot:
                i += 1
            while values[j] < pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            break
    return values[target]


@njit(cache=True, nogil=True)
def _block_threshold(maxima: np.ndarray, k: int) -> float:
    """The k-th largest block maximum (-inf when there are at most k blocks).

    A cheap lower bound first - split the maxima into k groups; the smallest group maximum is
    <= the k-th largest, as the k group maxima are k distinct blocks - then an exact selection
    among the few maxima at or above that bound.
    """
    n_blocks = maxima.shape[0]
    if n_blocks <= k:
        return -np.inf
    bound = np.inf
    for g in range(k):
        best = -np.inf
        for b in range(g, n_blocks, k):
            best = max(best, maxima[b])
        bound = min(bound, best)
    above = maxima[maxima >= bound]
    return _kth_largest(above, k)


@njit(cache=True, nogil=True)
def _row_topk(row: np.ndarray, seen: np.ndarray, k: int, maxima: np.ndarray, idx_out: np.ndarray,
              val_out: np.ndarray) -> None:
    n = row.shape[0]
    for j in seen:
        if 0 <= j < n:
            row[j] = -np.inf
    _block_maxima(row, maxima)
    tau = _block_threshold(maxima, k)
    count = 0
    for b in range(maxima.shape[0]):
        if maxima[b] >= tau:
            count += min(b * BLOCK + BLOCK, n) - b * BLOCK
    cand_idx = np.empty(count, dtype=np.int64)
    cand_val = np.empty(count, dtype=row.dtype)
    count = 0
    for b in range(maxima.shape[0]):
        if maxima[b] >= tau:
            for j in range(b * BLOCK, min(b * BLOCK + BLOCK, n)):
                if row[j] >= tau:
                    cand_idx[count] = j
                    cand_val[count] = row[j]
                    count += 1
    # count >= k: the k blocks at or above tau each hold their maximum. Cut to exactly k - all
    # above the k-th value, then ties at it by ascending index - and sort those (stable).
    kth = _kth_largest(cand_val[:count].copy(), k)
    above = 0
    for c in range(count):
        above += cand_val[c] > kth
    chosen_idx = np.empty(k, dtype=np.int64)
    chosen_val = np.empty(k, dtype=row.dtype)
    taken, ties = 0, k - above
    for c in range(count):
        if cand_val[c] > kth or (cand_val[c] == kth and ties > 0):
            if cand_val[c] == kth:
                ties -= 1
            chosen_idx[taken] = cand_idx[c]
            chosen_val[taken] = cand_val[c]
            taken += 1
    order = np.argsort(-chosen_val, kind="mergesort")  # stable: ties keep ascending index
    for r in range(k):
        idx_out[r] = chosen_idx[order[r]]
        val_out[r] = chosen_val[order[r]]


@njit(cache=True, parallel=True, nogil=True)
def _topk(scores: np.ndarray, seen: np.ndarray, offsets: np.ndarray, k: int,
          idx_out: np.ndarray, val_out: np.ndarray) -> None:
    n_blocks = (scores.shape[1] + BLOCK - 1) // BLOCK
    for r in prange(scores.shape[0]):
        maxima = np.empty(n_blocks, dtype=scores.dtype)
        _row_topk(scores[r], seen[offsets[r]:offsets[r + 1]], k, maxima, idx_out[r], val_out[r])


def masked_topk(scores: np.ndarray, seen: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` item indices and scores per row of ``scores`` [B, N] with ``seen[r]`` masked.

    ``scores`` must be a writable C-contiguous float32 array; it is overwritten (seen items become
    -inf). ``seen`` holds one int array of item indices per row (out-of-range values are ignored).
    Returns (idx [B, k] int64, values [B, k] float32), best first; a row with fewer than k unseen
    items ends in -inf scores. Raises ValueError for a bad shape or k.
    """
    if scores.ndim != 2 or scores.dtype != np.float32 or not scores.flags.c_contiguous:
        raise ValueError(f"scores must be a C-contiguous float32 matrix, got {scores.dtype} "
                         f"{scores.shape}")
    if len(seen) != scores.shape[0]:
        raise ValueError(f"{len(seen)} seen lists for {scores.shape[0]} rows")
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k must be in 1..{scores.shape[1]}, got {k}")
    offsets = np.zeros(len(seen) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in seen], out=offsets[1:])
    flat = np.concatenate(seen).astype(np.int64, copy=False) if len(seen) else np.empty(0, np.int64)
    idx = np.empty((scores.shape[0], k), dtype=np.int64)
    values = np.empty((scores.shape[0], k), dtype=np.float32)
    _topk(scores, flat, offsets, k, idx, values)
    return idx, values
