#!/usr/bin/env bash
# Entrypoint of the project image. As in the official Airflow image, an Airflow subcommand runs under
# `airflow` (`command: scheduler` runs `airflow scheduler`); anything else runs as given
# (`mlflow server ...`, `recsys lookup --user 1`, `bash`).
set -euo pipefail

case "${1:-}" in
  api-server | scheduler | dag-processor | triggerer | celery | db | users | dags | tasks | jobs \
    | config | connections | variables | pools | assets | providers | info | version)
    exec airflow "$@"
    ;;
esac
# MLflow's basic-auth config holds a password: written at start from the environment, never baked in.
if [[ "${1:-}" == mlflow && -n "${MLFLOW_AUTH_CONFIG_PATH:-}" ]]; then
  python -m recsys.ops.stack mlflow-auth-ini "${MLFLOW_AUTH_CONFIG_PATH}" >/dev/null
fi
exec "$@"
