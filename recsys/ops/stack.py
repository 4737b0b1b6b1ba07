"""Settings of the production configuration, shared by `make stack` and docker-compose.yaml.

Both read one env file with the layout of ``.env.example``: the same variable names, the same
secrets. ``make stack`` (scripts/stack.py) creates it on its first start with a fresh secret for
every ``change-me`` of the template, mode 0600, and refuses one that others can read; docker compose
reads the same file as ``.env``. Variables set in the environment win over the file, as in compose.

    python -m recsys.ops.stack mlflow-auth-ini PATH   # MLflow's basic-auth config from the environment
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import socket
import stat
import sys
from pathlib import Path

from recsys.config import PROJECT_ROOT, ConfigError

TEMPLATE = PROJECT_ROOT / ".env.example"
PLACEHOLDER = "change-me"
_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


def template_names() -> list[str]:
    """Every variable of ``.env.example``, in its order."""
    return [m.group(1) for line in TEMPLATE.read_text().splitlines() if (m := _LINE.match(line))]


def _fresh(name: str) -> str:
    if name == "AIRFLOW_FERNET_KEY":  # a Fernet key: 32 url-safe base64-encoded bytes
        return base64.urlsafe_b64encode(os.urandom(32)).decode()
    return secrets.token_urlsafe(32)  # letters, digits, - and _: safe in URLs and Feast's string


def read_env(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of an env file (comments and blank lines skipped, no quoting)."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise ConfigError(f"{path}:{number}: expected NAME=value, got {line[:40]!r}")
        values[match.group(1)] = match.group(2)
    return values


def ensure_env(path: Path) -> dict[str, str]:
    """Read the stack's env file, creating it from the template (fresh secrets, 0600) if missing.

    The process environment wins over the file. A file that group or others can read, a secret
    still set to ``change-me`` or a variable of the template missing from the file is an error.
    """
    if not path.exists():
        lines = []
        for line in TEMPLATE.read_text().splitlines():
            match = _LINE.match(line)
            if match and match.group(2) == PLACEHOLDER:
                line = f"{match.group(1)}={_fresh(match.group(1))}"
            lines.append(line)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines) + "\n")
        print(f"generated {path} (mode 0600): every secret of the stack, fresh", file=sys.stderr)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
    values = read_env(path)
    missing = [name for name in template_names() if name not in values and name not in os.environ]
    if missing:
        raise ConfigError(f"{path} lacks {', '.join(missing)} (see {TEMPLATE.name})")
    values.update({k: v for k, v in os.environ.items() if k in values})
    unset = [k for k, v in values.items() if v == PLACEHOLDER]
    if unset:
        raise ConfigError(f"{path}: replace {PLACEHOLDER} in {', '.join(unset)} with a secret")
    return values


def mlflow_auth_ini(path: Path, env: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """MLflow's basic-auth config (0600): users in Postgres database ``mlflow_auth``.

    Needs MLFLOW_DB_PASSWORD and the database's host and port (MLFLOW_AUTH_DB_HOST, default
    ``postgres``, the compose service; ``make stack`` passes 127.0.0.1 and its port). The admin
    login comes from MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD in the server's environment, created the
    first time the server starts against an empty user store.
    """
    host = env.get("MLFLOW_AUTH_DB_HOST", "postgres")
    port = env.get("MLFLOW_AUTH_DB_PORT", "5432")
    text = (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = postgresql+psycopg2://mlflow:{env['MLFLOW_DB_PASSWORD']}@{host}:{port}/mlflow_auth\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return path


def environment(values: dict[str, str], home: Path, cores: int, workers: int) -> dict[str, str]:
    """What every Airflow process and task of ``make stack`` gets: docker-compose.yaml's
    x-airflow-common environment with 127.0.0.1 and the host ports for the service names, and the
    stack's folders under ``home``. tests/unit/test_compose.py keeps the two in step."""
    pg, redis = values["POSTGRES_HOST_PORT"], values["REDIS_HOST_PORT"]
    api, mlflow = values["AIRFLOW_HOST_PORT"], values["MLFLOW_HOST_PORT"]
    airflow_db = f"airflow:{values['AIRFLOW_DB_PASSWORD']}@127.0.0.1:{pg}/airflow"
    return {
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{airflow_db}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{airflow_db}",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://:{values['REDIS_PASSWORD']}@127.0.0.1:{redis}/0",
        # one task per core over all workers; parallelism caps the scheduler's queue to match
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(max(1, cores // workers)),
        "AIRFLOW__CORE__PARALLELISM": str(max(cores, workers)),
        "AIRFLOW__CORE__FERNET_KEY": values["AIRFLOW_FERNET_KEY"],
        "AIRFLOW__API__SECRET_KEY": values["AIRFLOW_API_SECRET_KEY"],
        "AIRFLOW__API_AUTH__JWT_SECRET": values["AIRFLOW_JWT_SECRET"],
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": api,
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api}/execution/",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "true",
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        # several workers on one host: each task instance records which one ran it
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "recsys.ops.stack.worker_hostname",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow}",
        "MLFLOW_TRACKING_USERNAME": values["MLFLOW_ADMIN_USERNAME"],
        "MLFLOW_TRACKING_PASSWORD": values["MLFLOW_ADMIN_PASSWORD"],
        "REDIS_CONNECTION_STRING": f"127.0.0.1:{redis},db=1,password={values['REDIS_PASSWORD']}",
        "RECSYS_HOME": str(home / "recsys"),
        "RECSYS__PATHS__FEATURE_REPO": str(home / "feature_repo"),
        "RECSYS__SCORE__THREADS": "1",  # one task per core, one core per task
        "RECSYS__LOCKS__BACKEND": "redis",  # one run at a time across workers (recsys.ops.locks)
        # the application's database: the nightly ingest reads the day's ratings from it
        "RECSYS__EVENTS__SOURCE": f"postgresql+psycopg2://app:{values['APP_DB_PASSWORD']}@127.0.0.1:{pg}/app",
        "RECSYS_MLFLOW_UI_URL": f"http://127.0.0.1:{mlflow}",
    }


def worker_hostname() -> str:
    """Airflow's ``core.hostname_callable`` in the stack: several Celery workers share one host,
    so each task instance records which one ran it (``RECSYS_WORKER_NAME``, e.g. worker-1@host)."""
    name = os.environ.get("RECSYS_WORKER_NAME")
    return f"{name}@{socket.getfqdn()}" if name else socket.getfqdn()


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "mlflow-auth-ini":
        print(mlflow_auth_ini(Path(argv[1])))
        return 0
    print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
