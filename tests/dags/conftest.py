"""DAG test fixtures: a session-wide Airflow home (SQLite, migrated once) and an isolated recsys home.

Airflow reads its configuration when it is first imported, so nothing here imports airflow at
module level: the ``airflow`` fixture sets AIRFLOW_HOME and friends first, migrates the metadata
DB in a subprocess, then imports it. Tasks run in-process under ``dag.test()`` and resolve their
settings from the environment, which ``recsys_env`` points at a tmp home, a free Redis port (the
embedded server, stopped in teardown even when a test fails) and a tmp copy of feature_repo/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recsys.config import PROJECT_ROOT, Settings, load_settings
from recsys.ops import redis_server
from tests.ports import free_port

AIRFLOW = str(Path(sys.executable).parent / "airflow")
DAGS = PROJECT_ROOT / "dags"
# Three epochs at five times the default learning rate: the sasrec default then reaches valid
# NDCG@10 0.045 on the sample, over twice MostPop's 0.021, which the promotion gate requires of a
# first version (six epochs at 0.003 reached 0.047 in twice the time).
FAST = {
    "RECSYS__TRAIN__MAX_EPOCHS": "3",
    "RECSYS__SIMILAR__MAX_EPOCHS": "3",
    # three epochs teach the similar tower's content path little without its own loss (README)
    "RECSYS__SIMILAR__CONTENT_WEIGHT": "1",
    "RECSYS__TRAIN__LEARNING_RATE": "0.01",
    "RECSYS__TRAIN__PROGRESS_BAR": "false",
}


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """AIRFLOW_HOME in tmp with the project's dags/ and plugins/, no examples, a migrated SQLite DB."""
    if "airflow" in sys.modules:
        pytest.fail("airflow was imported before the tests' AIRFLOW_HOME was set")
    home = tmp_path_factory.mktemp("airflow")
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        proc = subprocess.run([AIRFLOW, "db", "migrate"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        yield home


@pytest.fixture(scope="session")
def dagbag(airflow: Path) -> Any:
    """The project's DAG files parsed as the dag-processor does (bundle folder on sys.path)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS, bundle_name="dags-folder")


@pytest.fixture(scope="session")
def recsys_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The environment tasks read their settings from; the embedded Redis runs for the session."""
    repo = tmp_path_factory.mktemp("feast") / "feature_repo"
    shutil.copytree(PROJECT_ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    env = {
        "RECSYS_HOME": str(tmp_path_factory.mktemp("recsys")),
        "RECSYS__STORE__PORT": str(free_port()),
        "RECSYS__PATHS__FEATURE_REPO": str(repo),
        **FAST,
    }
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("RECSYS") or name in ("MLFLOW_TRACKING_URI", "REDIS_CONNECTION_STRING"):
                mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        settings = load_settings()
        with redis_server.running(settings):
            yield settings


@pytest.fixture(scope="session")
def run_dag(dagbag: Any, recsys_env: Settings) -> Any:
    """``run_dag(dag_id, **conf) -> (DagRun, seconds)``: one ``dag.test()`` run, timed."""

    # Every Param of every DAG as parsed. A run's conf goes into the DAG's own Param objects when
    # its tasks run in this process (airflow.sdk.definitions.param.process_params resolves the
    # shared Param with the conf's value), so a later dag.test() of the same DAG object would
    # inherit it: each run passes every Param, its defaults overridden by ``conf``.
    defaults = {
        dag_id: {name: dag.params.get_param(name).value for name in dag.params}
        for dag_id, dag in dagbag.dags.items()
    }

    def run(dag_id: str, **conf: Any) -> tuple[Any, float]:
        started = time.perf_counter()
        dag_run = dagbag.dags[dag_id].test(run_conf={**defaults[dag_id], **conf})
        seconds = time.perf_counter() - started
        print(f"\n{dag_id}: dag.test() {dag_run.state} in {seconds:.1f}s")
        return dag_run, seconds

    return run


@pytest.fixture(scope="session")
def airflow_db(airflow: Path) -> Any:
    """Metadata DB readers: ``.task_instances(run)``, ``.xcom(run, task_id)``, ``.asset_events(name)``."""
    import types

    return types.SimpleNamespace(task_instances=_task_instances, xcom=_xcom, asset_events=_asset_events)


def _task_instances(dag_run: Any) -> dict[str, list[Any]]:
    """task_id -> its task instances (several for a mapped task), in map index order."""
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = dag_run.get_task_instances(session=session)
        session.expunge_all()
    out: dict[str, list[Any]] = {}
    for ti in sorted(tis, key=lambda t: (t.task_id, t.map_index)):
        out.setdefault(ti.task_id, []).append(ti)
    return out


def _xcom(dag_run: Any, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    """A value a task of ``dag_run`` pushed (deserialized)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(
                dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id, key=key, map_index=map_index
            )
            .one()
        )
        return XComModel.deserialize_value(row)


def _asset_events(name: str) -> list[dict]:
    """Extras of every event of the asset called ``name``, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == name)
            .order_by(AssetEvent.id)
            .all()
        )
        return [dict(row.extra or {}) for row in rows]
