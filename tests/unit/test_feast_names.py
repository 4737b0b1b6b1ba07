"""The Feast names recsys.online.layout declares are the ones feature_repo/ defines: one value, two
places that a test keeps equal (feature_repo/ stays importable by `feast apply` without recsys)."""

from __future__ import annotations

import pytest
import yaml
from feast import Entity, FeatureService, FeatureView

from recsys.config import PROJECT_ROOT
from recsys.online import layout
from recsys.online.feast_repo import repo_objects

pytestmark = pytest.mark.unit
REPO = PROJECT_ROOT / "feature_repo"


def test_feature_repo_defines_exactly_the_names_the_layout_uses() -> None:
    objects = repo_objects(REPO)
    views = {o.name: o for o in objects if isinstance(o, FeatureView)}
    services = {o.name for o in objects if isinstance(o, FeatureService)}
    entities = {o.name: o.join_key for o in objects if isinstance(o, Entity)}
    features = {name: tuple(f.name for f in view.features) for name, view in views.items()}
    assert features == {
        layout.USER_VIEW: layout.USER_FEATURES,
        layout.HISTORY_VIEW: layout.HISTORY_FEATURES,
        layout.MOVIE_VIEW: layout.MOVIE_FEATURES,
        layout.SIMILAR_VIEW: layout.SIMILAR_FEATURES,
    }
    assert {layout.FEATURE_SERVICE, layout.SIMILAR_SERVICE} <= services
    assert set(entities.values()) == {layout.USER_KEY, layout.MOVIE_KEY}
    assert yaml.safe_load((REPO / "feature_store.yaml").read_text())["project"] == layout.PROJECT
