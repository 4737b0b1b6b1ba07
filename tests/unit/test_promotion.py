"""Promotion on online evidence (recsys.tracking.promotion): when the canary's decision is due and
which way it goes, from the evidence row of the nightly evaluation."""

from __future__ import annotations

import pytest

from recsys.config import PromotionConfig
from recsys.tracking.promotion import decide, describe

RULES = PromotionConfig(mode="canary", canary_nights=7, tolerance=0.01, min_users=200)


def evidence(nights: int, diff: float, low: float, high: float, users: int = 500) -> dict:
    return {
        "evidence_nights": nights,
        "hit_rate_at_10_diff": diff,
        "hit_rate_at_10_diff_low": low,
        "hit_rate_at_10_diff_high": high,
        "evidence_users_canary": users,
        "evidence_users_champion": users * 9,
    }


@pytest.mark.parametrize(
    ("row", "action", "words"),
    [
        (None, "continue", "no evaluated night"),
        (evidence(3, -0.004, -0.02, 0.012), "continue", "3 of 7 nights"),
        # due after 7 nights: promoted when the interval lies above -tolerance, even slightly below 0
        (evidence(7, -0.002, -0.009, 0.005), "promote", "lies above -0.01 (after 7 night(s))"),
        (evidence(7, -0.004, -0.02, 0.012), "roll_back", "does not lie above -0.01 (after 7 night(s))"),
        # early: the interval excludes zero with enough users in each arm
        (evidence(2, 0.05, 0.02, 0.08), "promote", "(early)"),
        (evidence(2, -0.1, -0.15, -0.05), "roll_back", "(early)"),
        (evidence(2, -0.1, -0.15, -0.05, users=50), "continue", "2 of 7 nights"),  # too few users
        # nothing measured by the last night: nothing shows it is as good
        (evidence(7, float("nan"), float("nan"), float("nan"), users=0), "roll_back", "not measured"),
    ],
)
def test_the_decision_is_due_after_the_nights_or_early_and_goes_by_the_interval(row, action, words):
    got = decide(row, RULES)
    assert got.action == action and words in got.reason, got.reason


def test_the_reason_carries_the_evidence():
    text = describe(evidence(7, -0.002, -0.009, 0.005))
    assert text == (
        "HitRate@10 difference -0.0020 [95% -0.0090, +0.0050] over 7 night(s), "
        "500 canary and 4500 champion users"
    )


def test_the_settings_refuse_a_share_over_a_half_and_an_unknown_mode():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        PromotionConfig(canary_share=0.6)
    with pytest.raises(ValidationError):
        PromotionConfig(mode="sometimes")


@pytest.mark.parametrize(
    ("version", "share", "stop", "message"),
    [
        (1, None, False, "Param canary_version needs canary_share"),
        (None, 0.1, False, "Param canary_share needs canary_version"),
        (1, 0.1, True, "Params canary_stop and canary_version ask for opposite things"),
    ],
)
def test_the_nightly_runs_canary_params_refuse_a_half_request_before_touching_anything(
    version, share, stop, message, tmp_path
):
    from recsys.config import load_settings
    from recsys.errors import InvalidRequestError
    from recsys.pipelines import canary

    settings = load_settings(env={"RECSYS_HOME": str(tmp_path)})
    with pytest.raises(InvalidRequestError, match=message):
        canary.from_params(settings, version, share, stop, "airflow")
    assert not (tmp_path / "mlflow").exists()  # refused before the registry was opened
    assert canary.from_params(settings, None, None, False, "airflow") == ""
