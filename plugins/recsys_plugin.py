"""Airflow plugin of the recsys project: a listener that records how each recsys DAG run ended.

Every finished run of a ``recsys_*`` DAG appends one JSON line to ``<RECSYS_HOME>/airflow/runs.jsonl``
(dag_id, run_id, run_type, state, start/end, duration, message), next to the data and models it
produced: the operator's trail of ingests, retrainings and publishes that survives a metadata DB
reset. Listeners run in the scheduler (and in ``dag.test()``), never in the API server.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)
PREFIX = "recsys_"


def runs_file() -> Path:
    """Where outcomes go: RECSYS_HOME (as recsys resolves it) / airflow / runs.jsonl."""
    from recsys.config import load_settings

    return load_settings().paths.home / "airflow" / "runs.jsonl"


def record(dag_run, state: str, msg: str) -> None:  # noqa: ANN001
    """Append one outcome line; a failure to write is logged, never raised into the scheduler."""
    if not dag_run.dag_id.startswith(PREFIX):
        return
    start, end = dag_run.start_date, dag_run.end_date
    line = {
        "dag_id": dag_run.dag_id,
        "run_id": dag_run.run_id,
        "run_type": str(dag_run.run_type),
        "state": state,
        "start": start.isoformat() if start else None,
        "end": end.isoformat() if end else None,
        "seconds": round((end - start).total_seconds(), 1) if start and end else None,
        "msg": msg,
        "pid": os.getpid(),
    }
    try:
        path = runs_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            out.write(json.dumps(line) + "\n")
    except Exception:  # the scheduler must not fail because a record could not be written
        log.exception("could not record the outcome of %s %s", dag_run.dag_id, dag_run.run_id)


class RunOutcomes:
    """Listener object: Airflow calls these hooks when a DAG run finishes."""

    @hookimpl
    def on_dag_run_success(self, dag_run, msg: str) -> None:  # noqa: ANN001
        record(dag_run, "success", msg)

    @hookimpl
    def on_dag_run_failed(self, dag_run, msg: str) -> None:  # noqa: ANN001
        record(dag_run, "failed", msg)


class RecsysPlugin(AirflowPlugin):
    name = "recsys"
    listeners = [RunOutcomes()]
