"""The pairwise table for "similar movies": per query movie, positives, hard and soft negatives.

From the train split's positives and the catalogue (pure logic, no I/O):

- **positives** (``pairs.max_positives`` per query at most): movies the same users liked, more often
  than chance (PMI > 0) and at least ``pairs.min_support`` times, ranked by a shrunk cosine
  ``c_ij / (sqrt(n_i n_j) + shrink)``. ``shares_characteristics`` is False for the positive pairs whose
  movies share no genre: liked together, yet not distinguishable by their characteristics;
- **hard negatives** (``pairs.max_hard_negatives``): movies that match the query on almost every key
  characteristic - at least one shared genre, and genre Jaccard + same decade + same popularity
  band >= ``pairs.hard_min_match`` (closest first) - but that its fans liked no more than chance
  (PMI <= 0, or never together);
- **soft negatives**: up to ``pairs.soft_sample`` movies with opposite characteristics (no shared
  genre, another decade and another popularity band), clustered by k-means on their characteristics
  into ``pairs.soft_clusters`` clusters, of which each cluster's medoid is kept.

Queries are movies with at least ``pairs.min_positives`` positives. The table is split 80/10/10 by
query movie (a seeded permutation), so no query is in two splits; its other movies may be.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from recsys.config import PairsConfig

COLUMNS = ["movie_id_first", "movie_id_second", "label", "kind", "split", "shares_characteristics"]
KINDS = ("positive", "hard_negative", "soft_negative")
SPLIT_SHARES = (("train", 0.8), ("valid", 0.1), ("test", 0.1))
_YEAR = re.compile(r"\((\d{4})\)\s*$")


def characteristics(catalogue: pd.DataFrame, bands: int = 5) -> dict[str, np.ndarray]:
    """Per catalogue row (item_idx order): genre multi-hot, decade (-1 unknown), popularity band."""
    genres = catalogue["genres"].fillna("").str.split("|")
    names = sorted({g for gs in genres for g in gs if g and g != "(no genres listed)"})
    onehot = np.zeros((len(catalogue), len(names)), dtype=np.float32)
    position = {g: i for i, g in enumerate(names)}
    for row, gs in enumerate(genres):
        for g in gs:
            if g in position:
                onehot[row, position[g]] = 1.0
    years = catalogue["title"].fillna("").map(lambda t: int(m.group(1)) if (m := _YEAR.search(t)) else -1)
    decade = np.where(years.to_numpy() > 0, years.to_numpy() // 10 * 10, -1)
    rank = catalogue["train_count"].rank(method="first").to_numpy() - 1
    band = (rank * bands // max(len(catalogue), 1)).astype(np.int64)
    return {"genres": onehot, "decade": decade, "band": band}


def _jaccard(onehot: np.ndarray, query: int) -> np.ndarray:
    inter = onehot @ onehot[query]
    union = onehot.sum(1) + onehot[query].sum() - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _feature_matrix(feats: dict[str, np.ndarray]) -> np.ndarray:
    """Characteristics as one vector per movie for k-means: genres, decade and band scaled to ~[0, 1]."""
    decade = np.where(feats["decade"] > 0, (feats["decade"] - 1900) / 120.0, -0.5)
    band = feats["band"] / max(int(feats["band"].max()), 1)
    return np.hstack([feats["genres"], decade[:, None], band[:, None]]).astype(np.float32)


def kmeans_medoids(points: np.ndarray, k: int, rng: np.random.Generator, iters: int = 10) -> np.ndarray:
    """Row indices of the medoids (member nearest its centre) of a k-means clustering of ``points``.

    Identical points are clustered once (movies often share all their characteristics); with no
    more distinct points than ``k``, each distinct point is its own cluster.
    """
    distinct, first, inverse = np.unique(points, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if len(distinct) <= k:
        return np.sort(first)
    weights = np.bincount(inverse, minlength=len(distinct)).astype(np.float32)
    centres = distinct[rng.choice(len(distinct), size=k, replace=False)]
    for _ in range(iters):
        d = ((distinct[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
        label = d.argmin(1)
        for c in range(k):
            members = label == c
            if members.any():
                centres[c] = np.average(distinct[members], axis=0, weights=weights[members])
    d = ((distinct[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    label = d.argmin(1)
    medoids = [first[np.flatnonzero(label == c)[d[label == c, c].argmin()]] for c in np.unique(label)]
    return np.sort(np.asarray(medoids))


def user_item(train: pd.DataFrame, n_items: int) -> sparse.csr_matrix:
    """Binary users x items matrix of train positives (a movie liked twice counts once)."""
    users = train["user_idx"].to_numpy()
    items = train["item_idx"].to_numpy()
    n_users = int(users.max()) + 1 if len(users) else 0
    x = sparse.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items))
    x.data[:] = 1.0
    return x


def co_count_blocks(x: sparse.csr_matrix, queries: np.ndarray, block: int) -> Iterator[tuple[int, Any, Any]]:
    """(query, other items, users in common) per query, computed ``block`` queries at a time.

    The whole item x item matrix does not fit at MovieLens-20M size (about 700M non-zeros, 11 GB
    measured on a synthetic stand-in); a block of query rows does.
    """
    xt = x.T.tocsr()
    for start in range(0, len(queries), block):
        rows = queries[start : start + block]
        co = (xt[rows] @ x).tocsr()
        co.sort_indices()  # ties in the ranking go to the lower item index, whatever the block
        for r, q in enumerate(rows.tolist()):
            other = co.indices[co.indptr[r] : co.indptr[r + 1]]
            together = co.data[co.indptr[r] : co.indptr[r + 1]]
            keep = other != q
            yield q, other[keep], together[keep]


def mine(train: pd.DataFrame, catalogue: pd.DataFrame, cfg: PairsConfig) -> pd.DataFrame:
    """The pairwise table (columns :data:`COLUMNS`) from train positives (user_idx, item_idx) and the
    catalogue (item_idx order: movie_id, title, genres, train_count)."""
    rng = np.random.default_rng(cfg.seed)
    n_items = len(catalogue)
    x = user_item(train, n_items)
    counts, n_users = np.asarray(x.sum(0)).ravel(), x.shape[0]
    feats = characteristics(catalogue, cfg.popularity_bands)
    points = _feature_matrix(feats)
    movie = catalogue["movie_id"].to_numpy()
    rows: list[tuple] = []  # (query row, other row, label, kind, shares_characteristics)
    queries = np.flatnonzero(counts >= cfg.min_query_count)
    for q, other, together in co_count_blocks(x, queries, cfg.block):
        expected = counts[q] * counts[other] / max(n_users, 1)
        liked = (together >= cfg.min_support) & (together > expected)  # PMI > 0
        cosine = together / (np.sqrt(counts[q] * counts[other]) + cfg.shrink)
        best = other[liked][np.argsort(-cosine[liked], kind="stable")][: cfg.max_positives]
        if len(best) < cfg.min_positives:
            continue
        jaccard = _jaccard(feats["genres"], q)
        rows += [(q, j, 1, "positive", bool(jaccard[j] > 0)) for j in best]

        chance = np.ones(n_items, dtype=bool)  # liked together no more than chance (or never)
        chance[other[together > expected]] = False
        chance[q] = False
        match = jaccard + (feats["decade"] == feats["decade"][q]) + (feats["band"] == feats["band"][q])
        hard = np.flatnonzero(chance & (jaccard > 0) & (match >= cfg.hard_min_match))
        hard = hard[np.lexsort((rng.random(len(hard)), -match[hard]))][: cfg.max_hard_negatives]
        rows += [(q, j, 0, "hard_negative", True) for j in hard]

        opposite = np.flatnonzero(
            chance
            & (jaccard == 0)
            & (feats["decade"] != feats["decade"][q])
            & (feats["band"] != feats["band"][q])
        )
        if len(opposite) > cfg.soft_sample:
            opposite = np.sort(rng.choice(opposite, size=cfg.soft_sample, replace=False))
        if len(opposite):
            soft = opposite[kmeans_medoids(points[opposite], cfg.soft_clusters, rng)]
            rows += [(q, j, 0, "soft_negative", False) for j in soft]
    table = pd.DataFrame(rows, columns=["first", "second", "label", "kind", "shares_characteristics"])
    table.insert(0, "movie_id_first", movie[table.pop("first").to_numpy(dtype=np.int64)])
    table.insert(1, "movie_id_second", movie[table.pop("second").to_numpy(dtype=np.int64)])
    table["split"] = split_of(table["movie_id_first"], cfg.seed)
    table["label"] = table["label"].astype(np.int8)
    return table[COLUMNS]


def split_of(queries: pd.Series, seed: int) -> np.ndarray:
    """80/10/10 by query movie: a seeded permutation of the distinct queries, cut by the shares."""
    distinct = np.sort(queries.unique())
    order = np.random.default_rng(seed).permutation(len(distinct))
    names = np.empty(len(distinct), dtype=object)
    cut = 0.0
    for name, share in SPLIT_SHARES:
        lo, cut = int(round(len(distinct) * cut)), cut + share
        names[order[lo : int(round(len(distinct) * cut))]] = name
    return pd.Series(names, index=distinct).reindex(queries.to_numpy()).to_numpy()


def overlaps(table: pd.DataFrame) -> dict[str, float | int]:
    """How often the split by query still shares movies, and how often a positive is also a negative.

    - movies that are a query in one split and appear (as any pair's second movie) in another;
    - movies that are a positive of some query and a negative (hard or soft) of another; and of
      those, the ones where the two queries sit in different splits.
    """
    queries = table.groupby("movie_id_first")["split"].first()
    seconds = table[["movie_id_second", "split"]].drop_duplicates()
    as_query = seconds["movie_id_second"].map(queries)
    crossing = seconds[as_query.notna() & (as_query != seconds["split"])]["movie_id_second"].nunique()
    pos = table[table["kind"] == "positive"][["movie_id_second", "split"]].drop_duplicates()
    neg = table[table["kind"] != "positive"][["movie_id_second", "split"]].drop_duplicates()
    both = set(pos["movie_id_second"]) & set(neg["movie_id_second"])
    joined = pos.merge(neg, on="movie_id_second", suffixes=("_pos", "_neg"))
    across = joined[joined["split_pos"] != joined["split_neg"]]["movie_id_second"].nunique()
    n_pos = max(pos["movie_id_second"].nunique(), 1)
    return {
        "queries": int(len(queries)),
        "query_movies_seen_in_another_split": int(crossing),
        "query_movies_seen_in_another_split_share": round(crossing / max(len(queries), 1), 4),
        "positive_movies": int(pos["movie_id_second"].nunique()),
        "positive_also_negative": len(both),
        "positive_also_negative_share": round(len(both) / n_pos, 4),
        "positive_also_negative_across_splits": int(across),
        "positive_also_negative_across_splits_share": round(across / n_pos, 4),
    }
