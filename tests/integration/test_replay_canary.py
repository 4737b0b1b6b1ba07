"""The replay's canary scenarios on small data (recsys.pipelines.canary_scenario): a generated
release (ml-1m's shape) played in weekly steps from June 2000, when about 80 users a week rate a
movie highly. A challenger starts as the canary for half the users on night 1 and the nightly judge
decides with the default tolerance (promotion.tolerance 0.01) after two evaluated nights, or earlier
once 20 users in each arm show a difference whose interval excludes zero.

Each contrast is made clear on purpose, so that it shows at this sample: ``worse`` is the id tower
trained one epoch at a learning rate of 1e-5 (about random lists) against a trained champion, and
``better`` a trained default model against a champion trained like that.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from recsys.config import load_settings
from recsys.ops.registry import Registry
from recsys.pipelines import replay
from recsys.pipelines.canary_scenario import Scenario

pytestmark = pytest.mark.integration
RECSYS = str(Path(sys.executable).parent / "recsys")
TRAINED = ("train.max_epochs=2", "train.learning_rate=0.003")
RANDOM = ("train.max_epochs=1", "train.learning_rate=0.00001")
COMMON = [
    "train.max_interactions=40000",
    "train.progress_bar=false",
    "promotion.canary_nights=2",
    "promotion.min_users=20",
]


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "small"
    subprocess.run([RECSYS, "synth", "--preset", "small", "--seed", "0", "--out", str(out)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    return out


def play(
    release: Path, tmp_path: Path, kind: str, champion: tuple, challenger: tuple
) -> tuple[dict, Registry]:
    settings = load_settings([*COMMON, *champion], env={"RECSYS_HOME": str(tmp_path / "caller")})
    scenario = Scenario(kind, night=1, share=0.5, overrides=challenger)  # type: ignore[arg-type]
    out = tmp_path / "replay"
    report = replay.replay(settings, release, date(2000, 6, 1), 3, 7, 365, out, scenario)
    here = replay.replay_settings(settings, out, out / "stream" / "release")
    assert json.loads((out / "replay.json").read_text())["canary"]["decision"] == report["canary"]["decision"]
    return report["canary"], Registry.open(here)


def test_a_clearly_worse_canary_is_rolled_back_on_its_evidence(release, tmp_path):
    canary, models = play(release, tmp_path, "worse", TRAINED, ("model.user_tower=id", *RANDOM))
    decision = canary["decision"]
    assert canary["started"]["night"] == 1 and canary["started"]["version"] == "2"
    # the gate's offline comparison at the start, on the night's split, already saw it worse
    assert canary["started"]["valid"]["ndcg_at_10"] < canary["started"]["champion_valid"]["ndcg_at_10"]
    assert decision["action"] == "roll_back" and canary["nights_to_decision"] in (1, 2), decision
    evidence = decision["evidence"]
    assert evidence["hit_rate_at_10_diff_low"] <= evidence["hit_rate_at_10_diff"] < -0.01
    assert evidence["evidence_users_canary"] >= 20 and evidence["evidence_users_champion"] >= 20
    assert models.alias_version("canary") is None and models.champion_version() == "1"
    tags = models.resolve("2").tags
    assert (
        tags["canary_decision"] == "roll_back"
        and "does not lie above -0.01" in tags["canary_decision_reason"]
    )
    # every night of the canary is recorded with its judgement, up to the decision
    assert [n["action"] for n in canary["nights"]][-1] == "roll_back"


def test_a_clearly_better_canary_is_promoted_on_its_evidence(release, tmp_path):
    canary, models = play(release, tmp_path, "better", RANDOM, TRAINED)
    decision = canary["decision"]
    assert decision["action"] == "promote" and canary["nights_to_decision"] in (1, 2), decision
    assert decision["evidence"]["hit_rate_at_10_diff_low"] > -0.01
    assert models.champion_version() == "2" and models.alias_version("canary") is None
    assert models.resolve("2").tags["canary_decision"] == "promote"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--canary-setting", "train.max_epochs=1"], "--canary-setting needs --canary worse|better"),
        (["--canary", "better", "--canary-share", "0.9"], "canary share must be in (0, 0.5], got 0.9"),
        (["--canary", "better", "--canary-share", "nan"], "canary share must be in (0, 0.5], got nan"),
        (
            ["--canary", "worse", "--canary-night", "3"],
            "the canary scenario starts on night 3 of only 2 played",
        ),
        (["--canary", "worse", "--canary-setting", "model.colour=red"], "unknown setting 'model.colour'"),
    ],
)
def test_the_replay_refuses_a_bad_scenario_in_one_line_before_it_plays(args, message, release, tmp_path):
    out = subprocess.run(
        [RECSYS, "replay", "--source", str(release), "--start", "2000-06-01", "--nights", "2",
         "--out", str(tmp_path / "out"), *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1 and out.stderr.startswith(f"error: {message}"), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "replay.json").exists()
