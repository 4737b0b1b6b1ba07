#!/usr/bin/env bash
# Mounted into /docker-entrypoint-initdb.d of the postgres service: runs once, when the data volume
# is empty (`make stack` runs it on a new cluster too). One login role and one database each for Airflow's metadata, MLflow's backend store
# and the application (its `ratings` table, the event source), so none can read another's tables. Passwords come from .env; psql's :'var' quoting
# keeps any character in them safe. Changing them later needs ALTER ROLE (or `docker compose down -v`).
set -euo pipefail

: "${AIRFLOW_DB_PASSWORD:?set AIRFLOW_DB_PASSWORD in .env}"
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD in .env}"
: "${APP_DB_PASSWORD:?set APP_DB_PASSWORD in .env}"

psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --dbname "${POSTGRES_DB}" \
  -v airflow_password="${AIRFLOW_DB_PASSWORD}" -v mlflow_password="${MLFLOW_DB_PASSWORD}" \
  -v app_password="${APP_DB_PASSWORD}" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
REVOKE ALL ON DATABASE airflow FROM PUBLIC;
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
-- MLflow's basic-auth users and permissions (recsys/ops/stack.py mlflow_auth_ini)
CREATE DATABASE mlflow_auth OWNER mlflow;
REVOKE ALL ON DATABASE mlflow_auth FROM PUBLIC;
-- The application's database: people's ratings land in table `ratings` as they happen; the
-- nightly ingest reads the rows above its watermark (`id`, assigned on insert).
CREATE ROLE app LOGIN PASSWORD :'app_password';
CREATE DATABASE app OWNER app;
REVOKE ALL ON DATABASE app FROM PUBLIC;
\connect app
SET ROLE app;
CREATE TABLE ratings (
  id BIGSERIAL PRIMARY KEY,
  "userId" BIGINT NOT NULL,
  "movieId" BIGINT NOT NULL,
  rating DOUBLE PRECISION NOT NULL,
  "timestamp" BIGINT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
SQL
