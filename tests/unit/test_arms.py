"""The canary's slice (recsys.runtime.arms): a salted hash of the user id, stable and independent
of the process, that grows with the share and changes with the salt."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from recsys.runtime.arms import CANARY_ARM, CHAMPION_ARM, Arms, buckets, check_share

USERS = np.arange(1, 200_001, dtype=np.int64)


def test_the_slice_holds_the_share_of_users_and_the_same_users_in_another_process():
    arms = Arms("3", "5", 0.1, "salt-a")
    mine = arms.in_canary(USERS)
    assert abs(mine.mean() - 0.1) < 0.005  # 200,000 draws: the standard error is 0.0007
    code = (
        "import numpy as np; from recsys.runtime.arms import Arms; u = np.arange(1, 200_001); "
        "print(np.flatnonzero(Arms('3', '5', 0.1, 'salt-a').in_canary(u))[:20].tolist())"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == str(np.flatnonzero(mine)[:20].tolist())


def test_the_hash_is_pinned_so_a_running_canary_keeps_its_users_across_releases():
    # splitmix64(id XOR sha256("s1")[:8]) >> 11 / 2**53; changing it would move live users between arms
    got = buckets(np.array([1, 2, 3, 138493]), "s1")
    assert got.tolist() == pytest.approx(
        [0.6439934277194476, 0.20111162071897515, 0.15545419451099118, 0.2952138306642844]
    )


def test_a_larger_share_keeps_every_user_and_a_new_salt_draws_an_independent_slice():
    small, large = Arms("3", "5", 0.1, "a").in_canary(USERS), Arms("3", "5", 0.3, "a").in_canary(USERS)
    assert not (small & ~large).any() and abs(large.mean() - 0.3) < 0.005
    other = Arms("3", "5", 0.1, "b").in_canary(USERS)
    assert abs((small & other).mean() - 0.01) < 0.002  # independent: 0.1 x 0.1


def test_buckets_are_uniform_on_the_unit_interval_and_need_no_sorted_ids():
    b = buckets(USERS, "a")
    assert 0 <= b.min() and b.max() < 1
    counts, _ = np.histogram(b, bins=10, range=(0, 1))
    assert counts.min() > 0.095 * len(USERS) and counts.max() < 0.105 * len(USERS)
    shuffled = np.random.default_rng(0).permutation(USERS)
    assert np.array_equal(buckets(shuffled, "a"), b[shuffled - 1])


def test_assign_names_the_arm_and_versions_maps_it_to_its_version():
    arms = Arms("3", "5", 0.5, "a")
    names = arms.assign(USERS[:1000])
    assert set(names) == {CHAMPION_ARM, CANARY_ARM}
    assert np.array_equal(names == CANARY_ARM, arms.in_canary(USERS[:1000]))
    assert arms.versions() == {"champion": "3", "canary": "5"} and arms.label == "3+canary5"
    alone = Arms("3")
    assert set(alone.assign(USERS[:10])) == {CHAMPION_ARM} and alone.label == "3"


def test_arms_travel_as_a_dict_and_a_plan_without_arms_is_the_champion_alone():
    arms = Arms("3", "5", 0.25, "a")
    assert Arms.from_dict(arms.as_dict()) == arms
    assert Arms.from_dict(None, champion="7") == Arms("7")
    with pytest.raises(ValueError, match="no arms recorded"):
        Arms.from_dict(None)


@pytest.mark.parametrize("share", [0, -0.1, 0.51, "a lot", None, float("nan")])
def test_a_share_outside_zero_to_a_half_is_refused_naming_it(share):
    with pytest.raises(ValueError, match="canary share must be"):
        check_share(share)


def test_a_canary_needs_a_salt_and_another_version_than_the_champion():
    with pytest.raises(ValueError, match="needs a salt"):
        Arms("3", "5", 0.1, "")
    with pytest.raises(ValueError, match="cannot also be the canary"):
        Arms("3", "3", 0.1, "a")
