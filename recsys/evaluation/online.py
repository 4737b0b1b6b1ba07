"""How served lists did: metrics of precomputed top-K lists against the positives that came after.

Pure functions on plain data (no I/O), used by the nightly ``evaluate_served`` task and the replay.

Per user with at least one new positive, with ``L`` the served list (best first) and ``P`` the new
positives (movies rated >= the threshold after the list was built, that the user had not rated
before, so the list could hold them; a movie the model does not know stays in ``P`` as a miss):

- ``hit_rate_at_10`` = 1[L[:10] holds a movie of P];
- ``recall_at_K`` = |L[:K] & P| / |P|;
- ``ndcg_at_10`` = DCG / IDCG, DCG = sum over positions i < 10 with L[i] in P of 1 / log2(i + 2),
  IDCG the same for min(|P|, 10) hits at the top.

Over all served lists (top 10): ``coverage_at_10`` (distinct movies / catalogue size),
``popularity_percentile`` (mean percentile, 0 to 100, of the recommended movies' training counts in
the catalogue: 100 is the most popular movie) and ``churn_at_10`` (mean share of a user's top 10 that
is not in the previous night's top 10, over users with a list both nights).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

USER_METRICS = ("hit_rate_at_10", "recall_at_10", "recall_at_100", "ndcg_at_10")
LIST_METRICS = ("coverage_at_10", "popularity_percentile", "churn_at_10")


def _discounts(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(n, dtype=np.float64) + 2.0)


def per_user(lists: Mapping[int, np.ndarray], positives: Mapping[int, set[int]]) -> pd.DataFrame:
    """One row per user of ``positives`` (non-empty sets) that has a list: the user metrics.

    Columns: user_id, positives (|P|), and every name of USER_METRICS.
    """
    rows = []
    for user, wanted in positives.items():
        if not wanted or user not in lists:
            continue
        ranked = np.asarray(lists[user], dtype=np.int64)
        hits = np.isin(ranked, np.fromiter(wanted, dtype=np.int64, count=len(wanted)))
        ideal = _discounts(min(len(wanted), 10)).sum()
        dcg = float((_discounts(min(len(ranked), 10)) * hits[:10]).sum())
        rows.append(
            (
                int(user),
                len(wanted),
                float(hits[:10].any()),
                hits[:10].sum() / len(wanted),
                hits[:100].sum() / len(wanted),
                dcg / ideal,
            )
        )
    return pd.DataFrame(rows, columns=["user_id", "positives", *USER_METRICS]).astype({"user_id": "int64"})


def coverage(lists: Mapping[int, np.ndarray], catalogue_size: int, k: int = 10) -> float:
    """Distinct movies in the top ``k`` of all lists, over the catalogue's size (0.0 when empty)."""
    if not lists or catalogue_size < 1:
        return 0.0
    tops = [np.asarray(items)[:k] for items in lists.values()]
    return len(np.unique(np.concatenate(tops))) / catalogue_size


def popularity_percentile(lists: Mapping[int, np.ndarray], counts: pd.Series, k: int = 10) -> float:
    """Mean percentile (0..100) of the top-``k`` movies' ``counts`` (movie_id -> training count);
    ties share their mean rank; a movie missing from ``counts`` is at 0. NaN without lists."""
    if not lists or counts.empty:
        return float("nan")
    percentile = (counts.rank(method="average") - 1) / max(len(counts) - 1, 1) * 100.0
    tops = np.concatenate([np.asarray(items)[:k] for items in lists.values()])
    return float(percentile.reindex(tops).fillna(0.0).mean()) if len(tops) else float("nan")


def churn(now: Mapping[int, np.ndarray], before: Mapping[int, np.ndarray], k: int = 10) -> float:
    """Mean share of each user's top ``k`` not in the top ``k`` before (users with both; NaN if none)."""
    shares = []
    for user, items in now.items():
        if user not in before:
            continue
        top = np.asarray(items)[:k]
        if len(top):
            shares.append(1.0 - np.isin(top, np.asarray(before[user])[:k]).sum() / len(top))
    return float(np.mean(shares)) if shares else float("nan")


def bootstrap(values: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the mean of ``values`` (resampled over users); NaNs when empty."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return float("nan"), float("nan")
    draws = np.random.default_rng(seed).integers(0, len(values), size=(n_resamples, len(values)))
    means = values[draws].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summary(users: pd.DataFrame, with_intervals: bool = False) -> dict[str, float | int]:
    """Mean of each user metric over ``users`` (a :func:`per_user` frame), with ``<metric>_low`` and
    ``<metric>_high`` (95% bootstrap) when asked; NaN with no users (nothing measured: a night
    nobody rated a movie highly is not a night of misses)."""
    out: dict[str, float | int] = {"users": len(users), "positives": int(users["positives"].sum())}
    for name in USER_METRICS:
        values = users[name].to_numpy(dtype=np.float64)
        out[name] = float(values.mean()) if len(values) else float("nan")
        if with_intervals:
            out[f"{name}_low"], out[f"{name}_high"] = bootstrap(values)
    return out


Z_95, Z_POWER_80 = 1.959964, 0.841621  # two-sided 5% test, 80% power


def compare(
    champion: np.ndarray, canary: np.ndarray, n_resamples: int = 2000, seed: int = 0
) -> dict[str, float | int]:
    """The canary's difference from the champion in the mean of one per-user metric.

    ``champion``, ``canary``: one value per user of each arm (independent slices of users). Returns
    ``diff`` (canary mean minus champion mean), ``low`` and ``high`` (95% bootstrap interval:
    each arm's users resampled on their own), ``users_champion``, ``users_canary``, and
    ``detectable`` (the smallest true difference a two-sided 5% test finds with 80% power at these
    sizes and variances: (1.96 + 0.84) x the standard error). NaNs when an arm has no user.
    """
    a = np.asarray(champion, dtype=np.float64)
    b = np.asarray(canary, dtype=np.float64)
    out: dict[str, float | int] = {"users_champion": len(a), "users_canary": len(b)}
    if not len(a) or not len(b):
        return {
            **out,
            "diff": float("nan"),
            "low": float("nan"),
            "high": float("nan"),
            "detectable": float("nan"),
        }
    rng = np.random.default_rng(seed)
    draws_a = a[rng.integers(0, len(a), size=(n_resamples, len(a)))].mean(axis=1)
    draws_b = b[rng.integers(0, len(b), size=(n_resamples, len(b)))].mean(axis=1)
    low, high = np.percentile(draws_b - draws_a, [2.5, 97.5])
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) if min(len(a), len(b)) > 1 else np.nan
    return {
        **out,
        "diff": float(b.mean() - a.mean()),
        "low": float(low),
        "high": float(high),
        "detectable": float((Z_95 + Z_POWER_80) * se),
    }
