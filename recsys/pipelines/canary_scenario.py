"""The replay's canary scenarios (``recsys replay --canary worse|better``): on a chosen night a
challenger is trained on that night's data, registered and started as the canary for a share of
the users; every later night the nightly judge (recsys.pipelines.canary.judge, settings
``promotion``) promotes it, rolls it back or lets it run, as production would.

- ``worse``: the id tower of the quality table (``model.user_tower=id``), far below the default
  history tower there, and unable to read what users did after its training;
- ``better``: the default model (the SASRec history tower, ``model.user_tower=sasrec``) trained on
  the night's data, which holds every step played so far. The champion is whatever the replay's
  settings trained on the initial release: with ``model.user_tower=id`` given to the replay, the
  previous default meets the new one, as a team upgrading its model would run it.

The challenger and the champion are also compared offline on the night's validation split (the
promotion gate's comparison, recsys.pipelines.retrain.compare): the start records both, so a
scenario shows whether validation and the online slice agree. The challenger is started by hand,
as ``recsys canary start`` would, whatever the gate would say.

Extra settings for the challenger's training (``train.max_epochs=...``) go in ``overrides``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from recsys.config import Settings, load_settings, parse_override
from recsys.errors import ConfigError
from recsys.pipelines import canary, ingest, retrain
from recsys.runtime.arms import check_share

log = logging.getLogger(__name__)
Kind = Literal["worse", "better"]
KINDS: dict[str, tuple[str, ...]] = {
    "worse": ("model.user_tower=id",),
    "better": ("model.user_tower=sasrec",),
}
BY = "replay canary scenario"


@dataclass(frozen=True)
class Scenario:
    """Start a ``kind`` challenger as the canary for ``share`` of the users on replay night ``night``."""

    kind: Kind
    night: int
    share: float = 0.5
    overrides: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"canary scenario must be one of {sorted(KINDS)}, got {self.kind!r}")
        if self.night < 1:
            raise ConfigError(f"the canary scenario's night must be >= 1, got {self.night}")
        try:
            check_share(self.share)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        load_settings([*KINDS[self.kind], *self.overrides], env={})  # ConfigError naming a bad one

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "night": self.night,
            "share": self.share,
            "overrides": list(self.overrides),
        }


def replay_settings(here: Settings, scenario: Scenario) -> Settings:
    """The replay's settings judging canaries on online evidence, with the scenario's share."""
    tree = here.model_dump()
    tree["promotion"].update(mode="canary", canary_share=scenario.share)
    return Settings.model_validate(tree)


def challenger_settings(here: Settings, scenario: Scenario) -> Settings:
    """``here`` with the scenario kind's settings and its ``overrides`` (``section.key=value``)."""
    tree = here.model_dump()
    for text in (*KINDS[scenario.kind], *scenario.overrides):
        (section, key), value = parse_override(text)
        if section not in tree or key not in tree[section]:
            raise ConfigError(f"unknown setting {section}.{key} in the canary scenario's overrides")
        tree[section][key] = value
    return Settings.model_validate(tree)


def start(here: Settings, scenario: Scenario, raw_dir: str, data_version: str) -> dict:
    """Prepare the night's data, train the challenger on it, register it and start it as the canary."""
    prepared = ingest.prepare(here, raw_dir, data_version)
    trained = retrain.train(
        challenger_settings(here, scenario), prepared["prepared_dir"], prepared["data_version"]
    )
    offline = retrain.compare(here, str(trained["version"]), prepared["prepared_dir"])
    state = canary.replace(here, str(trained["version"]), by=BY)
    log.info(
        "replay: version %s (%s) is the canary from night %d",
        trained["version"],
        scenario.kind,
        scenario.night,
    )
    return {
        "version": str(trained["version"]),
        "champion": state["champion"],
        "valid": offline["metrics"],
        "champion_valid": offline["champion_metrics"],
        "mostpop_valid": offline["mostpop_metrics"],
        "share": state["canary"]["share"],
        "salt": state["canary"]["salt"],
    }


def judge(here: Settings) -> dict:
    """The nightly judge on the running canary (``action`` none when there is none)."""
    return canary.judge(here, by=BY)
