"""The MLflow model registry and tracking, one :class:`Registry` object per registered model.

Registered models: ``two_tower`` (the recommender) and ``movie_similar`` (the similar-movies item
tower). Aliases: ``challenger`` always points at the newest registered version; ``champion`` (the
served model) moves only through a promotion gate (recsys.tracking.gate) or by hand with
:meth:`Registry.promote`; ``canary`` marks a version served to a slice of users
(recsys.tracking.canary), and leaves it when it is promoted. Stages are deprecated in MLflow and
never used.

This is the only module that touches MLflow's process-wide state: a :class:`Registry` holds its own
client, and :meth:`Registry.run` points MLflow's fluent API (``mlflow.log_metrics`` and the like,
which have no client argument) at this registry's store and experiment for the length of one run,
then puts back what was there.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from recsys.config import Settings
from recsys.errors import ModelNotFoundError
from recsys.home import models_dir

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, CANARY = "champion", "challenger", "canary"
BUNDLE_ARTIFACT = "bundle"  # the pyfunc artefact holding the model bundle folder
TRAIN_VALID_TAG = "valid_ndcg_at_10"  # version tag: the training run's own validation NDCG@10
Model = Literal["two_tower", "movie_similar", "online", "benchmarks"]
TWO_TOWER: Model = "two_tower"
MOVIE_SIMILAR: Model = "movie_similar"
ONLINE: Model = "online"  # no registered model: the experiment of the nightly online evaluation
BENCHMARKS: Model = "benchmarks"  # no registered model: benchmark results and their plots
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
TRACKING_ENV, REGISTRY_ENV = "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"


def _no_signature_warning(record: logging.LogRecord) -> bool:
    """Logging filter: drop MLflow's "Failed to infer model signature" (see log_model)."""
    return not record.getMessage().startswith("Failed to infer model signature")


@dataclass
class Promotion:
    """Outcome of the promotion gate or a manual promotion."""

    version: str
    promoted: bool
    previous: str | None  # the champion version before (None if there was none)
    reason: str


@dataclass(frozen=True)
class Registry:
    """One registered model in one MLflow store, with an explicit client.

    Build it with :meth:`open`; every method works on ``model_name`` in ``tracking_uri`` only.
    """

    client: MlflowClient
    tracking_uri: str
    model_name: str
    experiment: str
    experiment_id: str
    address: str  # the store as shown to people: no password
    cache: Path  # downloaded model bundles, one folder per version

    @classmethod
    def open(cls, settings: Settings, model: Model = TWO_TOWER) -> Registry:
        """The registry of ``model`` (``two_tower`` or ``movie_similar``; ``online``, ``benchmarks``:
        the online evaluation's or the benchmarks' experiment, with no model) in the settings'
        MLflow store; creates the store's folder (SQLite) and the model's experiment when missing."""
        cfg = settings.mlflow
        name, experiment = {
            TWO_TOWER: (cfg.model_name, cfg.experiment),
            MOVIE_SIMILAR: (cfg.similar_model_name, cfg.similar_experiment),
            ONLINE: ("", cfg.online_experiment),
            BENCHMARKS: ("", cfg.benchmark_experiment),
        }[model]
        uri = settings.tracking_uri
        assert uri is not None
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            location = None
            if uri.startswith("sqlite:"):
                settings.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
                location = settings.mlflow_artifacts.resolve().as_uri()
            experiment_id = client.create_experiment(experiment, artifact_location=location)
        else:
            experiment_id = found.experiment_id
        cache = models_dir(settings, name)
        return cls(client, uri, name, experiment, experiment_id, settings.tracking_address, cache)

    @contextmanager
    def _pointed(self) -> Iterator[None]:
        """MLflow's fluent API pointed at this store for the block, then put back as it was.

        MLflow keeps its tracking and registry URIs in MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI as
        well (for child processes): both are restored, unset when they were unset, so no later
        ``load_settings`` mistakes this block's store for the user's setting."""
        saved = {name: os.environ.get(name) for name in (TRACKING_ENV, REGISTRY_ENV, PROGRESS_BAR)}
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        os.environ[PROGRESS_BAR] = "false"  # MLflow's download bars would flood the task logs
        try:
            yield
        finally:
            mlflow.set_tracking_uri(saved[TRACKING_ENV])  # type: ignore[arg-type]  # None: unset
            mlflow.set_registry_uri(saved[REGISTRY_ENV])  # type: ignore[arg-type]  # None: unset
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    @contextmanager
    def run(self, run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
        """A new run in this model's experiment, or the existing run ``run_id``, as the active run:
        ``mlflow.log_*`` inside the block log to it."""
        with (
            self._pointed(),
            mlflow.start_run(run_id=run_id, experiment_id=None if run_id else self.experiment_id) as active,
        ):
            yield active

    def log_model(
        self, bundle: Path, python_model: Path, metrics: dict[str, float], tags: dict[str, str]
    ) -> str:
        """Log the pyfunc serving model (code ``python_model``, artefact ``bundle``) in the active
        run (see :meth:`run`) and register it as a new version with alias ``challenger``; the given
        metrics and tags become version tags. Returns the new version number."""
        # No input signature: MLflow's schema enforcement would drop unknown columns without a word
        # and answer an id beyond int64 with a conversion error; recsys.checks refuses both with a
        # message that names the problem. MLflow warns that it could not infer one: that is the
        # point, so the warning is left out.
        pyfunc_log = logging.getLogger("mlflow.pyfunc")
        pyfunc_log.addFilter(_no_signature_warning)
        try:
            with self._pointed():
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(python_model),
                    artifacts={BUNDLE_ARTIFACT: str(bundle)},
                    registered_model_name=self.model_name,
                    pip_requirements=_pip_requirements(),
                )
        finally:
            pyfunc_log.removeFilter(_no_signature_warning)
        version = str(info.registered_model_version)
        self.tag_version(version, {**tags, **{k: f"{v:.6f}" for k, v in metrics.items()}})
        self.client.set_registered_model_alias(self.model_name, CHALLENGER, version)
        log.info("registered %s version %s (alias %s)", self.model_name, version, CHALLENGER)
        return version

    def resolve(self, ref: str) -> ModelVersion:
        """A version by number ("3") or alias ("champion"); raises ModelNotFoundError naming what
        exists."""
        try:
            if ref.isdigit():
                return self.client.get_model_version(self.model_name, ref)
            return self.client.get_model_version_by_alias(self.model_name, ref)
        except MlflowException as exc:
            raise ModelNotFoundError(self._missing(ref)) from exc

    def _missing(self, ref: str) -> str:
        """What to say of a version or alias that does not exist: what does, or what to run."""
        versions = [row["version"] for row in self.versions()]
        what = f"version {ref}" if ref.isdigit() else f"version or alias {ref!r}"
        if not versions:
            return (
                f"{self.model_name} has no {what} at {self.address}: it has no version yet; "
                "run `recsys train` (or `make demo`) first"
            )
        known = ", ".join(reversed(versions))
        return f"{self.model_name} has no {what}: its versions are {known} (`recsys models`)"

    def champion_version(self) -> str | None:
        """The version that holds alias ``champion``, or None."""
        try:
            return str(self.resolve(CHAMPION).version)
        except ModelNotFoundError:
            return None

    def alias_version(self, alias: str) -> str | None:
        """The version that holds ``alias``, or None."""
        try:
            return str(self.client.get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException:
            return None

    def drop_alias(self, alias: str) -> None:
        """Remove ``alias`` from whichever version holds it (nothing when none does)."""
        if self.alias_version(alias) is not None:
            self.client.delete_registered_model_alias(self.model_name, alias)

    def promote(self, version: str, reason: str = "manual") -> Promotion:
        """Point ``champion`` at ``version`` (must exist); report what it replaced. A canary
        promoted to champion stops being the canary."""
        self.resolve(version)
        previous = self.champion_version()
        if self.alias_version(CANARY) == str(version):
            self.drop_alias(CANARY)
        self.client.set_registered_model_alias(self.model_name, CHAMPION, version)
        log.info("%s champion -> version %s (was %s): %s", self.model_name, version, previous, reason)
        return Promotion(version, True, previous, reason)

    def tag_version(self, version: str, tags: dict[str, str]) -> None:
        """Set tags on a registered version (e.g. the promotion gate's decision)."""
        for key, value in tags.items():
            self.client.set_model_version_tag(self.model_name, str(version), key, value)

    def record_decision(self, version: str, tags: dict[str, str], metrics: dict[str, float]) -> None:
        """A gate's decision on ``version``: tags and metrics on its training run, tags on the version."""
        run_id = self.resolve(str(version)).run_id
        if run_id:
            for key, text in tags.items():
                self.client.set_tag(run_id, key, text)
            for key, number in metrics.items():
                self.client.log_metric(run_id, key, number)
        self.tag_version(version, tags)

    def download_model(self, ref: str, dst: Path) -> tuple[str, Path]:
        """(version, local folder) of the whole pyfunc model of a version or alias, into ``dst``."""
        mv = self.resolve(ref)
        dst.mkdir(parents=True, exist_ok=True)
        with self._pointed():
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{mv.name}/{mv.version}", dst_path=str(dst)
            )
        return str(mv.version), Path(local)

    def download_bundle(self, ref: str) -> tuple[str, Path]:
        """(version, local bundle folder) of a version or alias, cached under ``cache``.

        A version's artefacts never change, so each is downloaded once (to a temp folder, then
        renamed); the cache key holds the run id too, so another store under the same home never
        collides.
        """
        mv = self.resolve(ref)
        cache = self.cache / f"v{mv.version}-{(mv.run_id or 'norun')[:12]}"
        if not (cache / "bundle.json").is_file():
            cache.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache.parent) as tmp:
                with self._pointed():
                    local = mlflow.artifacts.download_artifacts(
                        artifact_uri=f"models:/{mv.name}/{mv.version}", dst_path=str(Path(tmp) / "model")
                    )
                found = [p.parent for p in Path(local).rglob("bundle.json")]
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

    def versions(self) -> list[dict[str, Any]]:
        """Every registered version with its aliases and gate tags, newest first ([] when none)."""
        try:
            versions = self.client.search_model_versions(f"name='{self.model_name}'")
            # search results leave aliases empty; the registered model holds alias -> version
            aliases = self.client.get_registered_model(self.model_name).aliases if versions else {}
        except MlflowException:
            return []
        rows = [
            {
                "model": self.model_name,
                "version": str(v.version),
                "run_id": v.run_id,
                "aliases": sorted(a for a, ver in aliases.items() if str(ver) == str(v.version)),
                "valid_metric": next(
                    (v.tags[t] for t in (TRAIN_VALID_TAG, "valid_recall_at_10") if t in v.tags), None
                ),
                "data_version": v.tags.get("data_version") or v.tags.get("pairs_version"),
                "gate_decision": v.tags.get("gate_decision"),
            }
            for v in versions
        ]
        return sorted(rows, key=lambda r: int(r["version"]), reverse=True)


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    names = ["mlflow", "onnxruntime", "numpy", "pandas", "pyarrow", "redis", "pydantic", "PyYAML"]
    return [f"{n}=={version(n)}" for n in names]
