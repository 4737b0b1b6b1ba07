"""What the recsys DAGs share: the assets that chain them, retry defaults, settings and error mapping.

Not a DAG file. Tasks import recsys inside their bodies, so parsing a DAG file stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pendulum
from airflow.sdk import Asset, BaseOperatorLink, get_current_context
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from recsys.config import Settings

START_DATE = pendulum.datetime(2025, 1, 1, tz="UTC")

# Emitted by recsys_ingest when new prepared data passed validation; schedules recsys_retrain.
PREPARED_DATA = Asset(name="recsys_prepared_data", uri="recsys://data/prepared", group="recsys")
# Emitted by recsys_retrain only when the champion alias moved; schedules recsys_score_nightly.
CHAMPION_MODEL = Asset(name="recsys_champion_model", uri="recsys://models/two_tower/champion", group="recsys")
# Emitted by recsys_retrain only when the movie_similar champion moved; also schedules the nightly run.
SIMILAR_MODEL = Asset(
    name="recsys_similar_model", uri="recsys://models/movie_similar/champion", group="recsys"
)

RETRY_DELAY_ENV = "RECSYS_TASK_RETRY_DELAY_S"


def _retry_delay() -> timedelta:
    """The wait before a task's first retry: RECSYS_TASK_RETRY_DELAY_S seconds, 30 unless set.

    Read when the DAG files are parsed, so it is set in the environment of Airflow's processes. The
    stack test shortens it: a shard retried after its worker was killed need not wait half a minute.
    """
    value = os.environ.get(RETRY_DELAY_ENV, "30")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{RETRY_DELAY_ENV} must be a number of seconds, not {value!r}") from None
    if not 0 <= seconds <= 3600:
        raise ValueError(f"{RETRY_DELAY_ENV} must be between 0 and 3600 seconds, not {value!r}")
    return timedelta(seconds=seconds)


# Transient failures (Redis restarting, MLflow server busy, a DVC push) get retried with backoff;
# failures that retrying cannot fix raise AirflowFailException (see fail_fast_on_bad_input).
DEFAULT_ARGS = {
    "owner": "recsys",
    "retries": 2,
    "retry_delay": _retry_delay(),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
}


def load(**overrides: object) -> Settings:
    """Settings from the environment, plus this run's Params (None means "keep the setting").

    ``overrides`` maps a dotted settings key to a value, e.g. ``load(**{"score.k": params["k"]})``.
    Progress bars are off unless RECSYS__TRAIN__PROGRESS_BAR asks for them: Airflow files a task's
    stderr as error lines, and nobody watches a task's terminal.
    """
    from recsys.config import ENV_PREFIX, load_settings

    if f"{ENV_PREFIX}TRAIN__PROGRESS_BAR" not in os.environ:
        overrides = {"train.progress_bar": False, **overrides}
    return load_settings([f"{key}={value}" for key, value in overrides.items() if value is not None])


def params() -> dict:
    """The current run's Params (defaults merged with the trigger's conf)."""
    return dict(get_current_context()["params"])


HOLD_SHARD_ENV = "RECSYS_TEST_HOLD_SHARD"


def hold_for_test(shard: int) -> None:
    """Test-only fault hook: hold one scoring shard until the test releases it. Unset: returns at once.

    With ``RECSYS_TEST_HOLD_SHARD="<map_index>:<folder>"`` (tests/stack/test_stack.py sets it in the
    stack's environment, which the Celery workers inherit), the task of that shard writes
    ``<folder>/held`` (JSON: the task process's pid and the worker, ``RECSYS_WORKER_NAME`` or the
    host name; written to a temporary file and renamed) and waits until ``<folder>/release`` exists,
    so the test can kill the worker at a point it controls: while the shard is running. A try that
    finds ``release`` already there (the retry after the kill) goes on at once. Production never
    sets the variable.
    """
    spec = os.environ.get(HOLD_SHARD_ENV)
    if not spec:
        return
    import json
    import socket
    import time

    index, _, folder = spec.partition(":")
    if not index.strip().isdigit() or not folder:
        raise ValueError(f"{HOLD_SHARD_ENV}={spec!r}: expected <map_index>:<folder>")
    if int(index) != shard:
        return
    release = Path(folder) / "release"
    if release.exists():
        return
    marker = Path(folder) / "held"
    worker = os.environ.get("RECSYS_WORKER_NAME") or socket.gethostname()
    partial = marker.with_name(f".held.{os.getpid()}")
    partial.write_text(json.dumps({"pid": os.getpid(), "worker": worker, "shard": shard}))
    partial.replace(marker)
    print(f"{HOLD_SHARD_ENV}: shard {shard} held on {worker} until {release} exists")
    while not release.exists():
        time.sleep(0.2)


@contextmanager
def fail_fast_on_bad_input() -> Iterator[None]:
    """Turn errors that a retry cannot fix into AirflowFailException (no retries are spent).

    Failed validation, bad settings, malformed data and a missing model fail at once; Redis,
    MLflow, DVC and OS errors propagate unchanged and get the task's retries.
    """
    from recsys.errors import (
        ConfigError,
        DataError,
        IngestError,
        InvalidRequestError,
        ModelNotFoundError,
        ValidationFailed,
    )

    try:
        yield
    except IngestError:
        raise  # a download or DVC failure may pass on the next try
    except (ValidationFailed, ConfigError, DataError, ModelNotFoundError, InvalidRequestError) as exc:
        if isinstance(exc, ValidationFailed) and exc.docs:
            _push_data_docs(exc.docs)
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


def _push_data_docs(page: str) -> None:
    """The failed suite's Data Docs page into this task's XCom, for :class:`DataDocsLink`."""
    try:
        ti = get_current_context()["ti"]
    except RuntimeError:  # not inside a running task (a unit test of this mapping)
        return
    ti.xcom_push(DATA_DOCS_KEY, page)


def with_links(task_output, *links: BaseOperatorLink):  # noqa: ANN001, ANN201 - an XComArg
    """Attach operator extra links to the task behind a TaskFlow call's output; returns the output."""
    task_output.operator.operator_extra_links = list(links)
    return task_output


class DataDocsLink(BaseOperatorLink):
    """ "Data Docs" button on a validating task: the great-expectations page of its failed suite.

    The task pushes the page's path to XCom before it fails; the link is computed on the worker
    when the task ends (Airflow 3 runs operator links for failed tasks too). With
    RECSYS_DATA_DOCS_URL set (a web server over $RECSYS_HOME/data_docs) the link goes there,
    otherwise it is the page's file:// URL.
    """

    name = "Data Docs"

    def get_link(self, operator, *, ti_key) -> str:  # noqa: ANN001
        page = ti_key.xcom_pull(task_ids=operator.task_id, key=DATA_DOCS_KEY)
        if not page:
            return ""
        base = os.environ.get("RECSYS_DATA_DOCS_URL", "").rstrip("/")
        if base:
            path = Path(page)
            return f"{base}/{path.parent.name}/{path.name}"  # <suite>/<page>.html
        return Path(page).as_uri()


DATA_DOCS_KEY = "data_docs"


class MlflowRunLink(BaseOperatorLink):
    """ "MLflow run" button on a training task: opens the run its return value names.

    Computed on the worker when the task finishes and stored in XCom, so the API server needs
    no recsys code. The UI address comes from RECSYS_MLFLOW_UI_URL (default: `mlflow ui` on 5000).
    """

    name = "MLflow run"

    def get_link(self, operator, *, ti_key) -> str:  # noqa: ANN001
        result = ti_key.xcom_pull(task_ids=operator.task_id) or {}
        if not result.get("run_id"):
            return ""
        base = os.environ.get("RECSYS_MLFLOW_UI_URL", "http://127.0.0.1:5000").rstrip("/")
        return f"{base}/#/experiments/{result['experiment_id']}/runs/{result['run_id']}"
