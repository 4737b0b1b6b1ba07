"""Promotion on online evidence: whether the canary becomes the champion, is rolled back, or keeps
serving its slice (settings ``promotion``, recsys.config.PromotionConfig). Pure logic, no I/O.

The evidence is the canary's row of the nightly evaluation (recsys.pipelines.evidence): its
HitRate@10 difference from the champion (canary minus champion) with a 95% bootstrap interval over
users, pooled over the canary's nights, and the users of each arm. The decision is due after
``canary_nights`` evaluated nights, or earlier once the interval excludes zero with at least
``min_users`` users in each arm. When due, the canary is promoted if the interval's low end lies
above ``-tolerance`` (not worse than the champion by more than the tolerance, at 95%), otherwise
rolled back; a difference nobody could measure (no user with new positives in an arm) is a roll
back: nothing shows the canary is as good.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from recsys.config import PromotionConfig

METRIC = "hit_rate_at_10"
Action = Literal["promote", "roll_back", "continue"]


@dataclass(frozen=True)
class CanaryDecision:
    action: Action
    reason: str


def _number(evidence: dict[str, Any], key: str) -> float:
    value = evidence.get(key)
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def describe(evidence: dict[str, Any]) -> str:
    """The evidence in one phrase: the difference, its interval, the nights and the users."""
    diff, low, high = (_number(evidence, f"{METRIC}_diff{s}") for s in ("", "_low", "_high"))
    nights = int(_number(evidence, "evidence_nights") or 0)
    users = f"{int(_number(evidence, 'evidence_users_canary') or 0)} canary and " + (
        f"{int(_number(evidence, 'evidence_users_champion') or 0)} champion users"
    )
    if math.isnan(diff):
        return f"HitRate@10 difference not measured over {nights} night(s) ({users} with new positives)"
    return f"HitRate@10 difference {diff:+.4f} [95% {low:+.4f}, {high:+.4f}] over {nights} night(s), {users}"


def decide(evidence: dict[str, Any] | None, rules: PromotionConfig) -> CanaryDecision:
    """The decision on the canary's latest evidence (None: no evaluated night yet)."""
    if not evidence or not _number(evidence, "evidence_nights") >= 1:
        return CanaryDecision("continue", "no evaluated night of the canary yet")
    low, high = _number(evidence, f"{METRIC}_diff_low"), _number(evidence, f"{METRIC}_diff_high")
    nights = int(_number(evidence, "evidence_nights"))
    users = min(_number(evidence, "evidence_users_canary"), _number(evidence, "evidence_users_champion"))
    measured = not (math.isnan(low) or math.isnan(high))
    early = measured and users >= rules.min_users and (low > 0 or high < 0)
    shown = describe(evidence)
    if nights < rules.canary_nights and not early:
        return CanaryDecision(
            "continue", f"{shown}: {nights} of {rules.canary_nights} nights, no decision yet"
        )
    when = f"after {nights} night(s)" if not early or nights >= rules.canary_nights else "early"
    if measured and low > -rules.tolerance:
        return CanaryDecision("promote", f"{shown}: lies above -{rules.tolerance} ({when})")
    if not measured:
        return CanaryDecision("roll_back", f"{shown}: nothing shows it is as good ({when})")
    return CanaryDecision("roll_back", f"{shown}: does not lie above -{rules.tolerance} ({when})")
