"""Exact top-K of every row of a score matrix, with each row's seen items masked: a fused kernel.

ONNX Runtime computes the scores (one MatMul of user vectors against the item matrix); this kernel
then masks the seen items and selects the K best per row, in place and in one pass over memory.
ONNX Runtime's TopK keeps a heap of K indices per row and costs about as much as the MatMul itself
at K=100 over 27k items (benchmarks/speed.py); here each row costs one vectorised pass over the
scores plus branch-free work on a few hundred block maxima and candidates:

1. set the row's seen items to -inf (in place: the score buffer is ours);
2. block maxima in a strided layout, so that the pass is a plain vertical SIMD max with no
   horizontal reductions: the row is cut into stripes of FOLD * nb consecutive items (nb =
   ceil(N / BLOCK)); fine block j holds the items j, j + FOLD * nb, ... (BLOCK / FOLD of them) and
   coarse block c the fine blocks c, c + nb, ..., i.e. the items c, c + nb, c + 2 nb, ... (BLOCK);
3. a threshold t with at least K coarse maxima >= t (a bisection over the maxima that counts with
   SIMD compares, started from where the previous row's threshold fell): K blocks hold a score >= t,
   so the K-th best score is >= t and every item of the top K is >= t. Any such t gives the exact
   answer; stopping at K .. 1.25 K maxima only keeps the candidates few;
4. the candidates: items >= t of the fine blocks whose maximum is >= t, within the coarse blocks
   whose maximum is >= t (branch-free appends, about 1.2 K items);
5. their order: each candidate's rank is the number of candidates above it (a branch-free SIMD
   count, cheaper than a comparison sort at this size). Equal scores make ranks collide; then, and
   for large candidate sets, the candidates get unique 64-bit keys (order-preserving score bits,
   then the inverted item index) that a partition and sort order.

The result equals a full stable sort of the masked row cut at K - ties go to the lower item index,
as in ONNX Runtime's TopK - so it is exact, not approximate; tests/unit/test_topk.py checks it
against numpy. Rows are spread over threads (numba prange, one scratch set per thread); the kernel
compiles on first use and is cached on disk.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from recsys.runtime.fresh import fresh_row, positions

# numba's OpenMP layer spins and stalls when the 2 cores are shared with ONNX Runtime's threads
# (medians 5-10x the minimum); the plain workqueue layer does not. Chosen at the first parallel
# call, so setting it here holds unless the process ran a parallel numba function before.
if numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "workqueue"

BLOCK = 32  # items per coarse block: 27k items -> 836 coarse maxima per row
FOLD = 4  # fine blocks per coarse block: fine blocks of 8 items, 3344 fine maxima (13 KB, in L1)
RANK_LIMIT = 256  # rank candidates by counting up to this many; above, sort (count is quadratic)


@njit(cache=True, nogil=True, inline="always")
def _max(a: np.float32, b: np.float32) -> np.float32:
    return a if a > b else b


@njit(cache=True, nogil=True)
def _block_maxima(row: np.ndarray, fine: np.ndarray, coarse: np.ndarray) -> None:
    """fine[j] = max(row[j::len(fine)]), coarse[c] = max(fine[c::len(coarse)]); -inf if empty.

    A row holds at most BLOCK // FOLD = 8 stripes of len(fine) items, and at least 7 unless it is
    short: then each fine maximum is computed in registers from the 8 stripes and stored once
    (a read-modify-write of ``fine`` per stripe compiles to masked stores, 1.6x slower).
    """
    n, n_fine, n_coarse = row.shape[0], fine.shape[0], coarse.shape[0]
    if n >= 7 * n_fine and n_fine == 4 * n_coarse:
        nf = n_fine
        s0, s1, s2, s3 = row[:nf], row[nf : 2 * nf], row[2 * nf : 3 * nf], row[3 * nf : 4 * nf]
        s4, s5, s6, s7 = row[4 * nf : 5 * nf], row[5 * nf : 6 * nf], row[6 * nf : 7 * nf], row[7 * nf :]
        for j in range(s7.shape[0]):
            fine[j] = _max(
                _max(_max(s0[j], s1[j]), _max(s2[j], s3[j])), _max(_max(s4[j], s5[j]), _max(s6[j], s7[j]))
            )
        for j in range(s7.shape[0], n_fine):
            fine[j] = _max(_max(_max(s0[j], s1[j]), _max(s2[j], s3[j])), _max(_max(s4[j], s5[j]), s6[j]))
        f0, f1 = fine[:n_coarse], fine[n_coarse : 2 * n_coarse]
        f2, f3 = fine[2 * n_coarse : 3 * n_coarse], fine[3 * n_coarse :]
        for c in range(n_coarse):
            coarse[c] = _max(_max(f0[c], f1[c]), _max(f2[c], f3[c]))
        return
    fine[:] = -np.inf  # short rows: fewer stripes, one pass per stripe
    for start in range(0, n, n_fine):
        stripe = row[start : start + n_fine]  # a slice: plain loop indices vectorise (no wraparound)
        for j in range(stripe.shape[0]):
            fine[j] = _max(stripe[j], fine[j])
    coarse[:] = fine[:n_coarse]
    for start in range(n_coarse, n_fine, n_coarse):
        part = fine[start : start + n_coarse]
        for c in range(n_coarse):
            coarse[c] = _max(part[c], coarse[c])


@njit(cache=True, nogil=True)
def _count_at_least(values: np.ndarray, t: np.floating) -> int:
    count = 0
    for i in range(values.shape[0]):  # indexed: iterating the array itself compiles to gathers
        count += values[i] >= t
    return count


@njit(cache=True, nogil=True)
def _threshold(coarse: np.ndarray, k: int, frac: float) -> tuple[float, float]:
    """(t, its relative position in the maxima's range): >= k maxima are >= t, ideally <= 1.25 k.

    ``frac`` (from the previous row) is the first guess, then bisection; -inf when there are at
    most k blocks or fewer than k finite maxima.
    """
    if coarse.shape[0] <= k:
        return -np.inf, frac
    lo, hi = coarse[0], coarse[0]
    for c in range(coarse.shape[0]):
        value = coarse[c]
        lo = value if value < lo else lo
        hi = value if value > hi else hi
    if lo == -np.inf:  # whole blocks seen: bisect over the finite maxima
        lo = hi
        for c in range(coarse.shape[0]):
            value = coarse[c]
            lo = value if (value < lo) & (value > -np.inf) else lo
        if _count_at_least(coarse, lo) < k:
            return -np.inf, frac
    if lo == hi:
        return lo, frac
    best, a, b = lo, np.float64(lo), np.float64(hi)
    guess = np.float32(a + (frac if 0.0 <= frac <= 1.0 else 0.5) * (b - a))
    for _ in range(64):
        count = _count_at_least(coarse, guess)
        if count >= k:
            best, a = guess, np.float64(guess)
            if count <= k + k // 4:
                break
        else:
            b = np.float64(guess)
        guess = np.float32(a + 0.5 * (b - a))
        if not a < guess < b:
            break
    return best, (best - np.float64(lo)) / (np.float64(hi) - np.float64(lo))


@njit(cache=True, nogil=True)
def _candidates(
    row: np.ndarray,
    fine: np.ndarray,
    coarse: np.ndarray,
    t: float,
    sel: np.ndarray,
    cand_idx: np.ndarray,
    cand_val: np.ndarray,
) -> int:
    """Items >= t (index, value) of the blocks whose maximum is >= t; returns their count."""
    n, n_fine, n_coarse = row.shape[0], fine.shape[0], coarse.shape[0]
    t32 = np.float32(t)
    m = 0
    for c in range(n_coarse):  # branch-free appends: the tests are unpredictable
        sel[m] = c
        m += coarse[c] >= t32
    m_fine = 0
    for q in range(m):
        for f in range(FOLD):
            j = sel[q] + f * n_coarse
            sel[n_coarse + m_fine] = j
            m_fine += fine[j] >= t32
    fine_sel = sel[n_coarse : n_coarse + m_fine]
    count = 0
    for start in range(0, n, n_fine):  # stripe by stripe: a fixed trip count, ascending addresses
        stripe = row[start : start + n_fine]
        width = stripe.shape[0]
        for q in range(m_fine):
            j = fine_sel[q]
            inside = j < width
            value = stripe[j if inside else 0]
            cand_idx[count] = start + j
            cand_val[count] = value
            count += inside & (value >= t32)
    return count


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _rank_by_value(cand_idx: np.ndarray, cand_val: np.ndarray, count: int, k: int, top: np.ndarray) -> bool:
    """top[r] = the item of rank r (descending value), r < k; False if equal values among the
    first k + 1 ranks collide (the caller then breaks ties by index). top holds k + 2 slots."""
    top[:] = -1
    padded = (count + 15) // 16 * 16
    cand_val[count:padded] = -np.inf  # whole vectors only: no scalar remainder loop
    for i in range(count):
        value = cand_val[i]
        rank = np.float32(0.0)
        for j in range(padded):  # branch-free, 16 lanes; float32 counts are exact below 2**24
            rank += np.float32(1.0) if cand_val[j] > value else np.float32(0.0)
        top[min(int(rank), k + 1)] = cand_idx[i]  # slot k + 1 takes the ranks beyond k
    for r in range(min(count, k + 1)):
        if top[r] < 0:
            return False
    return True


@njit(cache=True, nogil=True)
def _keys(row: np.ndarray, cand_idx: np.ndarray, count: int, keys: np.ndarray) -> None:
    """One unique int64 per candidate, ordered like (score, -item): the stable sort's order."""
    bits = row.view(np.int32)
    for c in range(count):
        item = cand_idx[c]
        key = np.int64(bits[item] ^ ((bits[item] >> 31) & 0x7FFFFFFF))  # float order as int order
        key += key == -1  # -0.0 ties with +0.0
        keys[c] = (key << 32) | (0xFFFFFFFF - item)


@njit(cache=True, nogil=True)
def _top_by_key(keys: np.ndarray, count: int, k: int, top: np.ndarray) -> None:
    """top[r] = the item of the r-th largest key, r < k."""
    if count > 2 * k:  # heavy ties or a mostly seen row: keep the k largest first
        keys[:k] = np.partition(keys[:count], count - k)[count - k :]
        count = k
    if count <= RANK_LIMIT:
        for i in range(count):
            rank = 0
            for j in range(count):
                rank += keys[j] > keys[i]
            if rank < k:
                top[rank] = 0xFFFFFFFF - (keys[i] & 0xFFFFFFFF)
    else:
        ordered = np.sort(keys[:count])
        for r in range(k):
            top[r] = 0xFFFFFFFF - (ordered[count - 1 - r] & 0xFFFFFFFF)


@njit(cache=True, nogil=True)
def _row_topk(
    row: np.ndarray,
    seen: np.ndarray,
    k: int,
    frac: float,
    fine: np.ndarray,
    coarse: np.ndarray,
    sel: np.ndarray,
    cand_idx: np.ndarray,
    cand_val: np.ndarray,
    keys: np.ndarray,
    top: np.ndarray,
    idx_out: np.ndarray,
    val_out: np.ndarray,
) -> float:
    """One row into idx_out/val_out; returns the threshold's relative position for the next row."""
    n = row.shape[0]
    for j in seen:
        if 0 <= j < n:
            row[j] = -np.inf
    _block_maxima(row, fine, coarse)
    t, frac = _threshold(coarse, k, frac)
    count = _candidates(row, fine, coarse, t, sel, cand_idx, cand_val)
    if not (count <= RANK_LIMIT and _rank_by_value(cand_idx, cand_val, count, k, top)):
        _keys(row, cand_idx, count, keys)
        _top_by_key(keys, count, k, top)
    for r in range(k):
        idx_out[r] = top[r]
        val_out[r] = row[top[r]]
    return frac


@njit(cache=True, parallel=True, nogil=True)
def _topk(
    scores: np.ndarray,
    seen: np.ndarray,
    offsets: np.ndarray,
    k: int,
    n_chunks: int,
    idx_out: np.ndarray,
    val_out: np.ndarray,
    fresh: np.ndarray,
    position: np.ndarray,
    slots: int,
) -> None:
    n_rows, n = scores.shape
    n_coarse = (n + BLOCK - 1) // BLOCK
    n_fresh = len(fresh)
    picks = min(slots, n_fresh)
    for chunk in prange(n_chunks):  # one scratch set per chunk of rows, not per row
        fine = np.empty(n_coarse * FOLD, dtype=np.float32)
        coarse = np.empty(n_coarse, dtype=np.float32)
        sel = np.empty(n_coarse * (FOLD + 1), dtype=np.int64)
        cand_idx = np.empty(n, dtype=np.int64)
        cand_val = np.empty(n + 16, dtype=np.float32)
        keys = np.empty(n, dtype=np.int64)
        top = np.empty(k + 2, dtype=np.int64)
        mine, used = np.empty(n_fresh, dtype=np.float32), np.empty(n_fresh, dtype=np.bool_)
        items, merged = np.empty(picks + slots, dtype=np.int64), np.empty(picks + slots, dtype=np.float32)
        chosen = np.empty(picks + slots, dtype=np.bool_)
        frac = 0.5
        for r in range(chunk * n_rows // n_chunks, (chunk + 1) * n_rows // n_chunks):
            frac = _row_topk(
                scores[r],
                seen[offsets[r] : offsets[r + 1]],
                k,
                frac,
                fine,
                coarse,
                sel,
                cand_idx,
                cand_val,
                keys,
                top,
                idx_out[r],
                val_out[r],
            )
            if picks:  # the row is still in cache: the new movies' places (recsys.runtime.fresh)
                fresh_row(scores[r], fresh, fresh, position, slots, idx_out[r], val_out[r], mine, used,
                          items, merged, chosen)  # fmt: skip


def masked_topk(
    scores: np.ndarray,
    seen: list[np.ndarray],
    k: int,
    threads: int | None = None,
    fresh: np.ndarray | None = None,
    slots: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` item indices and scores per row of ``scores`` [B, N] with ``seen[r]`` masked.

    ``threads``: at most this many threads (None: numba's setting, every core by default).
    ``fresh`` (item indices of movies new since training) and ``slots``: the last ``slots`` places
    of each list kept for the row's best of them (recsys.runtime.fresh.fresh_tail's rule), applied
    to each row right after its top-K.

    ``scores`` must be a writable C-contiguous float32 array; it is overwritten (seen items become
    -inf). ``seen`` holds one int array of item indices per row (out-of-range values are ignored).
    Returns (idx [B, k] int64, values [B, k] float32), best first; a row with fewer than k unseen
    items ends in -inf scores. Raises ValueError for a bad shape or k.
    """
    if scores.ndim != 2 or scores.dtype != np.float32 or not scores.flags.c_contiguous:
        raise ValueError(f"scores must be a C-contiguous float32 matrix, got {scores.dtype} {scores.shape}")
    if len(seen) != scores.shape[0]:
        raise ValueError(f"{len(seen)} seen lists for {scores.shape[0]} rows")
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k must be in 1..{scores.shape[1]}, got {k}")
    fresh = np.empty(0, np.int64) if fresh is None or not slots else np.asarray(fresh, dtype=np.int64)
    slots = min(max(slots, 0), k)
    if len(fresh) and (fresh.min() < 0 or fresh.max() >= scores.shape[1]):
        raise ValueError(f"fresh item indices must be in 0..{scores.shape[1] - 1}")
    offsets = np.zeros(len(seen) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, seen), dtype=np.int64, count=len(seen)), out=offsets[1:])
    flat = np.concatenate(seen).astype(np.int64, copy=False) if len(seen) else np.empty(0, np.int64)
    idx = np.empty((scores.shape[0], k), dtype=np.int64)
    values = np.empty((scores.shape[0], k), dtype=np.float32)
    previous = numba.get_num_threads()
    n_threads = previous if threads is None else max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
    n_chunks = max(1, min(n_threads, scores.shape[0]))
    numba.set_num_threads(n_threads)  # for this calling thread only
    try:
        _topk(scores, flat, offsets, k, n_chunks, idx, values, fresh, positions(fresh), slots)
    finally:
        numba.set_num_threads(previous)
    return idx, values
