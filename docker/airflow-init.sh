#!/usr/bin/env bash
# One-shot job of the airflow-init service (runs as root, before every other Airflow service):
# make the shared volumes writable for the airflow user, migrate the metadata DB (Airflow's and the
# FAB auth manager's tables) and create the admin login. Safe to re-run: every `docker compose up`
# runs it again, and an existing admin is left as it is.
set -euo pipefail

: "${AIRFLOW_ADMIN_USERNAME:?set AIRFLOW_ADMIN_USERNAME}"
: "${AIRFLOW_ADMIN_PASSWORD:?set AIRFLOW_ADMIN_PASSWORD in .env}"

shared=("${AIRFLOW_HOME}/logs" "${RECSYS_HOME}" "${RECSYS__PATHS__FEATURE_REPO}/data")
mkdir -p "${shared[@]}"

airflow version
airflow db migrate
# Prints "... already exists in the db" and exits 0 when the user is there. --password=VALUE: a
# generated secret may start with "-", which argparse would take for an option.
airflow users create --role Admin \
  --username "${AIRFLOW_ADMIN_USERNAME}" --password="${AIRFLOW_ADMIN_PASSWORD}" \
  --firstname Admin --lastname recsys --email "${AIRFLOW_ADMIN_EMAIL:-admin@example.invalid}"

# Last, so whatever the steps above wrote as root is handed over too; only files that need it.
find "${shared[@]}" \( ! -user airflow -o ! -group 0 \) -exec chown airflow:0 {} +
chmod -R g+rwX "${shared[@]}"
echo "airflow-init: done"
