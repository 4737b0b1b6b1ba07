"""Quality of similar-movie lists: Recall@K of a query's positives among all movies (the query itself
left out) and AUC of its positives against its hard and its soft negatives, per query, averaged over
the queries of one split; and the scores of item vectors under a distance.

Scores are similarities, higher is closer: cos(a, b) for the cosine distance, -||a - b|| for L2.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

KS = (10, 50)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half."""
    order = np.sort(neg)
    below = np.searchsorted(order, pos, side="left")
    ties = np.searchsorted(order, pos, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(pos) * len(neg)))


def similarity_metrics(
    scores_of: Any, pairs: pd.DataFrame, movie_ids: np.ndarray, ks: tuple[int, ...] = KS
) -> dict[str, float]:
    """Recall@K and AUCs of one split's queries (see the module docstring).

    ``scores_of(rows)`` -> [len(rows), N] similarities of the catalogue rows ``rows`` to every
    catalogue movie; ``pairs``: the table's rows of one split; ``movie_ids``: catalogue movie id per
    row. Recall@K of a query = its positives ranked below K (itself left out) / its positives, ties
    with other movies broken at random (the expected value is counted).
    A pair whose movie the catalogue lacks counts as a miss (a positive) or is dropped (a negative).
    """
    index = pd.Index(movie_ids)
    rows = index.get_indexer(pairs["movie_id_first"].to_numpy())
    others = index.get_indexer(pairs["movie_id_second"].to_numpy())
    kinds = pairs["kind"].to_numpy()
    queries = np.unique(rows[rows >= 0])
    recalls: dict[int, list[float]] = {k: [] for k in ks}
    aucs: dict[str, list[float]] = {"hard_negative": [], "soft_negative": []}
    by_query = pd.Series(np.arange(len(rows))).groupby(rows).indices
    for start in range(0, len(queries), 256):
        chunk = queries[start : start + 256]
        scores = np.asarray(scores_of(chunk), dtype=np.float64)
        for r, q in enumerate(chunk.tolist()):
            s = scores[r].copy()
            s[q] = -np.inf
            members = by_query[q]
            pos = others[members][kinds[members] == "positive"]
            if not len(pos):
                continue
            known = pos[pos >= 0]
            # a hit counts P(rank < K) when ties are broken at random: (K - movies scoring higher) /
            # (movies scoring the same + 1), clipped to 0..1; the query itself is excluded
            if len(known):
                higher = (s[None, :] > s[known][:, None]).sum(1)
                ties = (s[None, :] == s[known][:, None]).sum(1) - 1
            else:
                higher = ties = np.empty(0)
            for k in ks:  # P(rank < k) when the tied movies are put in a random order
                recalls[k].append(float(np.clip((k - higher) / (ties + 1), 0, 1).sum()) / len(pos))
            for kind in aucs:
                neg = others[members][(kinds[members] == kind) & (others[members] >= 0)]
                if len(neg) and len(known):
                    aucs[kind].append(_auc(s[known], s[neg]))
    out = {f"recall_at_{k}": float(np.mean(v)) if v else 0.0 for k, v in recalls.items()}
    out["auc_hard"] = float(np.mean(aucs["hard_negative"])) if aucs["hard_negative"] else 0.0
    out["auc_soft"] = float(np.mean(aucs["soft_negative"])) if aucs["soft_negative"] else 0.0
    out["queries"] = float(len(recalls[ks[0]]))
    return out


def vector_scores(vectors: np.ndarray, distance: str, queries: np.ndarray | None = None) -> Any:
    """``scores_of`` for :func:`similarity_metrics` from item vectors [N, D]: cos(a, b) for
    ``cosine`` (vectors normalised here), -||a - b|| for ``l2``, a . b for ``dot``. ``queries``
    [N, D]: the query side's vectors when they differ from the candidates' (a query movie embedded
    from its features alone, scored against every movie's served vector)."""

    def prepare(a: np.ndarray, centre: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float32)
        if distance == "l2":  # translation-invariant; centred, float32 stays exact (item_tower.distances)
            a = a - centre
        if distance == "cosine":
            a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        return a

    centre = np.asarray(vectors, dtype=np.float32).mean(0, keepdims=True)
    v = prepare(vectors, centre)
    q = v if queries is None else prepare(queries, centre)
    norms, query_norms = (v * v).sum(1), (q * q).sum(1)

    def scores_of(rows: np.ndarray) -> np.ndarray:
        dots = q[rows] @ v.T
        if distance == "l2":
            return -np.sqrt(np.maximum(query_norms[rows][:, None] + norms[None, :] - 2 * dots, 0.0))
        return dots

    return scores_of


def align_vectors(vectors: np.ndarray, their_ids: np.ndarray, movie_ids: np.ndarray) -> np.ndarray:
    """Rows of ``vectors`` (one per movie of ``their_ids``) reordered to ``movie_ids``; a movie they
    lack gets a row of NaN. Raises ValueError when the two lengths disagree."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(their_ids):
        raise ValueError(f"{vectors.shape} vectors for {len(their_ids)} movie ids")
    where = pd.Index(np.asarray(their_ids)).get_indexer(np.asarray(movie_ids))
    out = np.full((len(movie_ids), vectors.shape[1]), np.nan, dtype=np.float32)
    out[where >= 0] = vectors[where[where >= 0]]
    return out
