"""MLflow tracking and the model registry: runs, registered model ``two_tower``, aliases.

Aliases: ``challenger`` always points at the newest registered version; ``champion`` (the served
model) moves only through the promotion gate (recsys.tracking.gate, run by recsys.pipelines.tasks.promote)
or by hand with :func:`promote`. Stages are deprecated in MLflow and never used.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from recsys.config import Settings  # noqa: E402
from recsys.errors import ModelNotFoundError  # noqa: E402

log = logging.getLogger(__name__)


def _no_signature_warning(record: logging.LogRecord) -> bool:
    """Logging filter: drop MLflow's "Failed to infer model signature" (see log_model)."""
    return not record.getMessage().startswith("Failed to infer model signature")


CHAMPION, CHALLENGER = "champion", "challenger"
BUNDLE_ARTIFACT = "bundle"  # the pyfunc artefact holding the model bundle folder
TRAIN_VALID_TAG = "valid_ndcg_at_10"  # version tag: the training run's own validation NDCG@10


@dataclass
class Promotion:
    """Outcome of the promotion gate or a manual promotion."""

    version: str
    promoted: bool
    previous: str | None  # the champion version before (None if there was none)
    reason: str


def configure(settings: Settings) -> MlflowClient:
    """Point MLflow at the settings' tracking URI and make sure the experiment exists."""
    uri = settings.tracking_uri
    assert uri is not None
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if client.get_experiment_by_name(settings.mlflow.experiment) is None:
        location = None
        if uri.startswith("sqlite:"):
            settings.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
            location = settings.mlflow_artifacts.resolve().as_uri()
        client.create_experiment(settings.mlflow.experiment, artifact_location=location)
    mlflow.set_experiment(settings.mlflow.experiment)
    return client


def log_model(
    settings: Settings, bundle: Path, python_model: Path, metrics: dict[str, float], tags: dict[str, str]
) -> str:
    """Log the pyfunc serving model (code ``python_model``, artefact ``bundle`` = the model bundle
    folder of recsys.runtime.two_tower) in the active run and register it.

    The new version gets alias ``challenger`` and the given metrics/tags as version tags.
    Returns the new version number as a string.
    """
    # No input signature: MLflow's schema enforcement would drop unknown columns without a word
    # and answer an id beyond int64 with a conversion error; recsys.checks refuses both with a
    # message that names the problem (the request layout is documented in recsys.serving.models). MLflow
    # warns that it could not infer one: that is the point, so the warning is left out.
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    pyfunc_log.addFilter(_no_signature_warning)
    try:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(python_model),
            artifacts={BUNDLE_ARTIFACT: str(bundle)},
            registered_model_name=settings.mlflow.model_name,
            pip_requirements=_pip_requirements(),
        )
    finally:
        pyfunc_log.removeFilter(_no_signature_warning)
    version = str(info.registered_model_version)
    client = MlflowClient()
    for key, value in {**tags, **{k: f"{v:.6f}" for k, v in metrics.items()}}.items():
        client.set_model_version_tag(settings.mlflow.model_name, version, key, value)
    client.set_registered_model_alias(settings.mlflow.model_name, CHALLENGER, version)
    log.info("registered %s version %s (alias %s)", settings.mlflow.model_name, version, CHALLENGER)
    return version


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    names = ["mlflow", "onnxruntime", "numpy", "pandas", "pyarrow", "redis", "pydantic", "PyYAML"]
    return [f"{n}=={version(n)}" for n in names]


def resolve(settings: Settings, ref: str) -> mlflow.entities.model_registry.ModelVersion:
    """A model version by number ("3") or alias ("champion"); raises ModelNotFoundError."""
    client = MlflowClient()
    name = settings.mlflow.model_name
    try:
        if ref.isdigit():
            return client.get_model_version(name, ref)
        return client.get_model_version_by_alias(name, ref)
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"model {name!r} has no version or alias {ref!r} at {settings.tracking_address}; "
            "run `recsys train` (or `make demo`) first"
        ) from exc


def champion_version(settings: Settings) -> str | None:
    """The version that holds alias ``champion``, or None."""
    try:
        return str(resolve(settings, CHAMPION).version)
    except ModelNotFoundError:
        return None


def promote(settings: Settings, version: str, reason: str = "manual") -> Promotion:
    """Point ``champion`` at ``version`` (must exist); report what it replaced."""
    resolve(settings, version)
    previous = champion_version(settings)
    MlflowClient().set_registered_model_alias(settings.mlflow.model_name, CHAMPION, version)
    log.info("champion -> version %s (was %s): %s", version, previous, reason)
    return Promotion(version, True, previous, reason)


def download(settings: Settings, ref: str, dst: Path) -> tuple[str, Path]:
    """Download the serving model of a version/alias; returns (version, local model dir)."""
    mv = resolve(settings, ref)
    dst.mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{mv.name}/{mv.version}", dst_path=str(dst)
    )
    return mv.version, Path(local)


def tag_version(settings: Settings, version: str, tags: dict[str, str]) -> None:
    """Set tags on a registered version (e.g. the promotion gate's decision)."""
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(settings.mlflow.model_name, str(version), key, value)


def download_bundle(settings: Settings, ref: str) -> tuple[str, Path]:
    """(version, local bundle folder) of a version/alias, cached under ``paths.home/models``.

    A version's artefacts never change, so each is downloaded once (to a temp folder, then renamed);
    the cache key holds the run id too, so another registry under the same home never collides.
    """
    import tempfile

    mv = resolve(settings, ref)
    cache = (
        settings.paths.home
        / "models"
        / settings.mlflow.model_name
        / f"v{mv.version}-{(mv.run_id or 'norun')[:12]}"
    )
    if not (cache / "bundle.json").is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache.parent) as tmp:
            _, local = download(settings, str(mv.version), Path(tmp) / "model")
            found = [p.parent for p in local.rglob("bundle.json")]
            if len(found) != 1:
                raise ModelNotFoundError(
                    f"version {mv.version} of {mv.name} holds no model bundle; "
                    "it was registered by an older recsys: retrain"
                )
            try:
                found[0].rename(cache)
            except OSError:  # another task (a parallel shard) renamed its copy first
                if not (cache / "bundle.json").is_file():
                    raise
    return str(mv.version), cache


def list_versions(settings: Settings) -> list[dict]:
    """Every registered version with its aliases and gate metric, newest first."""
    client = MlflowClient()
    name = settings.mlflow.model_name
    try:
        versions = client.search_model_versions(f"name='{name}'")
        # search results leave aliases empty; the registered model holds alias -> version
        aliases = client.get_registered_model(name).aliases
    except MlflowException:
        return []
    rows = [
        {
            "version": str(v.version),
            "run_id": v.run_id,
            "aliases": sorted(a for a, ver in aliases.items() if str(ver) == str(v.version)),
            TRAIN_VALID_TAG: v.tags.get(TRAIN_VALID_TAG),
            "data_version": v.tags.get("data_version"),
            "gate_decision": v.tags.get("gate_decision"),
        }
        for v in versions
    ]
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)
