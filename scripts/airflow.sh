#!/usr/bin/env bash
# Airflow UI for the project (the body of `make airflow`): `airflow standalone` on 127.0.0.1.
#
# - AIRFLOW_HOME: .recsys/airflow (SQLite metadata DB, logs, generated admin password)
# - the project's dags/ and plugins/, no example DAGs
# - api-server on 127.0.0.1:${RECSYS_AIRFLOW_PORT:-8081} (MLflow keeps 5000; Airflow's default 8080 is
#   MLflow's default too)
# - recsys settings come from the environment as everywhere else (RECSYS_HOME, RECSYS__SECTION__KEY)
# - the executor sized for the machine: RECSYS_AIRFLOW_PARALLELISM task processes (default: one per
#   core; Airflow's default of 32 LocalExecutor workers is about 4.5 GB on a 2-core machine)
# Stop it with Ctrl-C: scripts/supervise.py stops every process it started within 15 s, workers
# included. The worker and triggerer log servers
# (8793/8794) bind all interfaces and Airflow has no setting for that: firewall them on shared hosts.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${ROOT}/.venv/bin"
PORT="${RECSYS_AIRFLOW_PORT:-8081}"
export PATH="${BIN}:${PATH}"  # standalone starts its components as `airflow ...` from PATH
export AIRFLOW_HOME="${AIRFLOW_HOME:-${ROOT}/.recsys/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${ROOT}/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="${ROOT}/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///${AIRFLOW_HOME}/airflow.db"
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT="${PORT}"
export AIRFLOW__API__BASE_URL="http://127.0.0.1:${PORT}"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:${PORT}/execution/"
export RECSYS_MLFLOW_UI_URL="${RECSYS_MLFLOW_UI_URL:-http://127.0.0.1:5000}"  # "MLflow run" links
export RECSYS_HOME="${RECSYS_HOME:-${ROOT}/.recsys}"
CORES="$(nproc 2>/dev/null || echo 2)"
export AIRFLOW__CORE__PARALLELISM="${RECSYS_AIRFLOW_PARALLELISM:-${CORES}}"
export AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG="${AIRFLOW__CORE__PARALLELISM}"
export RECSYS__SCORE__THREADS="${RECSYS__SCORE__THREADS:-1}"  # one task per core, one core per task

[[ -x "${BIN}/airflow" ]] || { echo "no ${BIN}/airflow: run \`make install\` first" >&2; exit 1; }
mkdir -p "${AIRFLOW_HOME}"
if (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null; then
    echo "port ${PORT} on 127.0.0.1 is taken; set RECSYS_AIRFLOW_PORT to a free one" >&2
    exit 1
fi

cat <<MSG
Airflow UI:  http://127.0.0.1:${PORT}   (REST API: http://127.0.0.1:${PORT}/api/v2)
Login:       user admin; the password is generated on the first start into
             ${AIRFLOW_HOME}/simple_auth_manager_passwords.json.generated
DAGs:        ${AIRFLOW__CORE__DAGS_FOLDER} (paused on creation: unpause them in the UI)
Executor:    LocalExecutor, ${AIRFLOW__CORE__PARALLELISM} task process(es) at a time
Stop:        Ctrl-C (everything it started is gone within 15 s)
MSG
exec "${BIN}/python" "${ROOT}/scripts/supervise.py" "${BIN}/airflow" standalone
