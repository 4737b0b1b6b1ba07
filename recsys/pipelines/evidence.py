"""The canary's online evidence: how its slice did against the champion's users, pooled over every
night the same canary (version and salt) served beside the same champion.

Each nightly evaluation (recsys.pipelines.evaluate) keeps its per-user metrics, with each user's
arm, in ``<home>/online/users/<data version>-<nights>.parquet``. The evidence reads those of the
canary's nights, averages each user's metric over the nights the user had new positives (a user
counts once, whatever the number of nights), and compares the arms with
recsys.evaluation.online.compare: the difference of means (canary minus champion), its 95%
bootstrap interval over users, the users and nights it rests on, and the smallest effect it could
detect at that sample. The evidence goes on the canary version's training run in MLflow (metrics
``canary_<metric>_diff`` and the like, tags on the version) and into the night's row.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.config import Settings
from recsys.evaluation import online
from recsys.files import read_parquet, write_parquet
from recsys.runtime.arms import CANARY_ARM, CHAMPION_ARM, Arms

log = logging.getLogger(__name__)
USERS_DIR = "users"


def users_path(settings: Settings, data_version: str, nights: str) -> Path:
    """Where one evaluation's per-user metrics are kept."""
    return (
        settings.paths.home
        / "online"
        / USERS_DIR
        / f"{data_version.replace('.dir', '')[:16]}-{nights}.parquet"
    )


def keep_users(settings: Settings, data_version: str, nights: str, users: pd.DataFrame) -> Path:
    """Write one evaluation's per-user metrics (user_id, arm, positives, the user metrics)."""
    return write_parquet(users, users_path(settings, data_version, nights))


def canary_nights(table: pd.DataFrame, arms: Arms) -> pd.DataFrame:
    """The evaluated nights of this canary: same version and salt, beside the same champion."""
    needed = {"arm", "model_version", "salt", "champion_version"}
    if table.empty or not needed <= set(table.columns):
        return table.iloc[:0]
    mine = (
        (table["arm"] == CANARY_ARM)
        & (table["model_version"].astype(str) == str(arms.canary))
        & (table["salt"].astype(str) == arms.salt)
        & (table["champion_version"].astype(str) == arms.champion)
    )
    return table[mine]


def gather(settings: Settings, table: pd.DataFrame, arms: Arms) -> tuple[pd.DataFrame, list[str]]:
    """Every user's metrics averaged over the canary's nights (user_id, arm, the user metrics),
    and the nights (the ``nights`` ranges of the event log) they come from."""
    nights = canary_nights(table, arms)
    frames = []
    for data_version, span in zip(nights["data_version"].astype(str), nights["nights"].astype(str)):
        path = users_path(settings, data_version, span)
        if path.is_file():
            frames.append(read_parquet(path, fix="it is rebuilt by the next evaluation"))
    if not frames:
        return pd.DataFrame(columns=["user_id", "arm", *online.USER_METRICS]), []
    users = pd.concat(frames, ignore_index=True)
    users = users[users["arm"].isin([CHAMPION_ARM, CANARY_ARM])]
    pooled = users.groupby(["arm", "user_id"], as_index=False)[list(online.USER_METRICS)].mean()
    return pooled, nights["nights"].astype(str).tolist()


def compare_arms(pooled: pd.DataFrame, nights: list[str]) -> dict[str, float | int | str]:
    """The canary against the champion on every user metric (flat keys: ``<metric>_diff``,
    ``<metric>_diff_low``, ``<metric>_diff_high``, ``<metric>_detectable``), with the users of
    each arm and the nights."""
    out: dict[str, float | int | str] = {
        "evidence_nights": len(nights),
        "evidence_night_ranges": ",".join(nights),
    }
    for name in online.USER_METRICS:
        got = online.compare(
            pooled.loc[pooled["arm"] == CHAMPION_ARM, name].to_numpy(dtype=np.float64),
            pooled.loc[pooled["arm"] == CANARY_ARM, name].to_numpy(dtype=np.float64),
        )
        out["evidence_users_champion"], out["evidence_users_canary"] = (
            got["users_champion"],
            got["users_canary"],
        )
        out.update(
            {
                f"{name}_diff": got["diff"],
                f"{name}_diff_low": got["low"],
                f"{name}_diff_high": got["high"],
                f"{name}_detectable": got["detectable"],
            }
        )
    return out


def record(settings: Settings, arms: Arms, evidence: dict) -> None:
    """The evidence on the canary version: numbers as metrics of its training run (one point per
    evaluated night), the summary as version tags."""
    from recsys.ops.registry import TWO_TOWER, Registry

    numbers = {
        f"canary_{k}": float(v) for k, v in evidence.items() if isinstance(v, (int, float)) and np.isfinite(v)
    }
    tags = {
        "canary_evidence_nights": str(evidence["evidence_nights"]),
        "canary_evidence_users": f"{evidence['evidence_users_canary']} canary, "
        f"{evidence['evidence_users_champion']} champion",
        "canary_hit_rate_at_10_diff": _interval(evidence, "hit_rate_at_10"),
    }
    assert arms.canary is not None
    Registry.open(settings, TWO_TOWER).record_decision(arms.canary, tags, numbers)


def _interval(evidence: dict, name: str) -> str:
    diff, low, high = (evidence[f"{name}_diff{s}"] for s in ("", "_low", "_high"))
    if not np.isfinite(diff):
        return "not measured yet"
    return f"{diff:+.4f} [{low:+.4f}, {high:+.4f}]"
