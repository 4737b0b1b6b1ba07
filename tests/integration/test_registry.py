"""recsys.ops.registry against real MLflow stores (SQLite under tmp): one Registry per registered
model and store, with its own client, and no process-wide MLflow state left behind."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest

from recsys.config import PROJECT_ROOT, load_settings
from recsys.errors import ModelNotFoundError
from recsys.ops.registry import CHALLENGER, CHAMPION, MOVIE_SIMILAR, TWO_TOWER, Registry

pytestmark = pytest.mark.integration
ENTRY = PROJECT_ROOT / "recsys" / "serving" / "pyfunc_two_tower.py"  # models from code


def _registry(home: Path, model: str = TWO_TOWER) -> Registry:
    return Registry.open(load_settings([], env={"RECSYS_HOME": str(home)}), model)  # type: ignore[arg-type]


def _register(models: Registry, tmp_path: Path) -> str:
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "bundle.json").write_text("{}")
    with models.run():
        mlflow.log_metric("seen", 1.0)
        return models.log_model(bundle, ENTRY, {"valid_ndcg_at_10": 0.5}, {"k": "10"})


@pytest.fixture
def clean_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)


def test_a_run_leaves_mlflows_global_state_and_environment_as_they_were(tmp_path, clean_mlflow_env):
    before = mlflow.get_tracking_uri()
    models = _registry(tmp_path / "a")
    version = _register(models, tmp_path)
    assert version == "1" and str(models.resolve(CHALLENGER).version) == "1"
    assert os.environ.get("MLFLOW_TRACKING_URI") is None and os.environ.get("MLFLOW_REGISTRY_URI") is None
    assert mlflow.get_tracking_uri() == before
    run = models.client.get_run(models.resolve("1").run_id)
    assert run.data.metrics["seen"] == 1.0 and run.info.experiment_id == models.experiment_id


def test_two_stores_and_two_models_never_see_each_other(tmp_path, clean_mlflow_env):
    first, second = _registry(tmp_path / "a"), _registry(tmp_path / "b")
    similar = _registry(tmp_path / "a", MOVIE_SIMILAR)
    version = _register(first, tmp_path)
    first.promote(version)
    assert first.champion_version() == "1"
    assert second.champion_version() is None and second.versions() == []
    assert similar.champion_version() is None and similar.versions() == []
    assert similar.experiment != first.experiment and similar.model_name == "movie_similar"


def test_a_missing_version_or_alias_names_what_there_is(tmp_path, clean_mlflow_env):
    models = _registry(tmp_path / "a")
    with pytest.raises(ModelNotFoundError, match="has no version yet; run `recsys train`"):
        models.resolve(CHAMPION)
    _register(models, tmp_path)
    with pytest.raises(ModelNotFoundError, match="two_tower has no version 7: its versions are 1"):
        models.promote("7")
    with pytest.raises(ModelNotFoundError, match="has no version or alias 'nightly': its versions are 1"):
        models.resolve("nightly")


def test_a_gate_decision_is_recorded_on_the_run_and_the_version(tmp_path, clean_mlflow_env):
    models = _registry(tmp_path / "a")
    version = _register(models, tmp_path)
    models.record_decision(version, {"gate_decision": "promoted"}, {"gate_valid_ndcg_at_10": 0.25})
    found = models.resolve(version)
    run = models.client.get_run(found.run_id)
    assert found.tags["gate_decision"] == "promoted" and run.data.tags["gate_decision"] == "promoted"
    assert run.data.metrics["gate_valid_ndcg_at_10"] == 0.25


def test_a_benchmark_is_logged_as_the_artefacts_of_a_run_of_its_own_experiment(tmp_path, clean_mlflow_env):
    from recsys.ops.registry import BENCHMARKS
    from recsys.tracking.benchmarks import log_benchmark

    before = mlflow.get_tracking_uri()
    settings = load_settings([], env={"RECSYS_HOME": str(tmp_path / "home")})
    result, plot = tmp_path / "quality.json", tmp_path / "quality.png"
    result.write_text('{"results": {}}')
    plot.write_bytes(b"\x89PNG")
    run_id = log_benchmark(settings, [result, plot], "quality")
    store = Registry.open(settings, BENCHMARKS)
    run = store.client.get_run(run_id)
    assert run.info.experiment_id == store.experiment_id and run.info.run_name == "quality"
    assert sorted(a.path for a in store.client.list_artifacts(run_id)) == ["quality.json", "quality.png"]
    assert mlflow.get_tracking_uri() == before and os.environ.get("MLFLOW_TRACKING_URI") is None
