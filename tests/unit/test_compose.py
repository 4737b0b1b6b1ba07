"""Structure of the production-like stack (docker-compose.yaml, .env.example, docker/).

No Docker engine runs where the tests do, so the stack is checked as data: services, images,
environment, loopback-only ports, secrets only by reference. `docker compose config` (which needs no
engine) validates the file against Compose's schema when the compose plugin is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"

AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
SERVICES = {"postgres", "redis", "mlflow", "airflow-init", *AIRFLOW_SERVICES}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|FERNET|REDISCLI_AUTH")
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}; $$ is a literal $.
REFERENCE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<rest>[^}]*)\}")
ONLY_A_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as data; yaml.safe_load resolves the x- anchors and `<<` merges."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" list form
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example line {line!r} is not KEY=value"
            pairs[key.strip()] = value.strip()
    return pairs


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in (*_strings(key), *_strings(value))]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


@pytest.mark.unit
def test_the_stack_has_every_service(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == SERVICES


@pytest.mark.unit
def test_airflow_services_share_the_common_config(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    common = compose["x-airflow-common"]
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        service = services[name]
        assert service["image"] == common["image"], name
        assert service["volumes"] == common["volumes"], name
        assert _environment(common).items() <= _environment(service).items(), name
    for name, command in AIRFLOW_SERVICES.items():
        assert services[name]["command"] == command


@pytest.mark.unit
def test_airflow_runs_celery_on_postgres_and_redis(compose: dict[str, Any]) -> None:
    env = _environment(compose["x-airflow-common"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
    assert re.fullmatch(
        r"redis://:\$\{REDIS_PASSWORD[^}]*\}@redis:6379/0", env["AIRFLOW__CELERY__BROKER_URL"]
    )
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"


@pytest.mark.unit
def test_recsys_settings_point_at_the_stack(services: dict[str, dict[str, Any]]) -> None:
    for name in AIRFLOW_SERVICES:
        env = _environment(services[name])
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        # Feast's format; db 1 keeps the lists apart from Celery's queue in db 0.
        assert env["REDIS_CONNECTION_STRING"].startswith("redis:6379,db=1,password=${REDIS_PASSWORD"), name
        assert env["RECSYS_HOME"] == "/opt/recsys/home", name


@pytest.mark.unit
def test_airflow_mounts_dags_plugins_feature_repo_and_shares_state(compose: dict[str, Any]) -> None:
    mounts = {}
    for volume in compose["x-airflow-common"]["volumes"]:
        source, target, *_ = volume.split(":")
        mounts[target] = source
    assert mounts["/opt/airflow/dags"] == "./dags"
    assert mounts["/opt/airflow/plugins"] == "./plugins"
    assert mounts["/opt/recsys/feature_repo"] == "./feature_repo"
    # Named volumes, so every worker sees the same DVC workspace, scored shards and Feast registry.
    for target in ("/opt/recsys/home", "/opt/recsys/feature_repo/data", "/opt/airflow/logs"):
        assert mounts[target] in compose["volumes"], target


@pytest.mark.unit
def test_airflow_init_migrates_and_the_others_wait_for_it(services: dict[str, dict[str, Any]]) -> None:
    init = services["airflow-init"]
    script = ROOT / "docker" / Path(init["command"]).name
    assert init["command"] == f"/opt/recsys/docker/{script.name}" and script.is_file()
    text = script.read_text()
    assert "airflow db migrate" in text
    assert "airflow users create --role Admin" in text
    assert init.get("restart") == "no"
    for name in AIRFLOW_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["airflow-init"] == {"condition": "service_completed_successfully"}, name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name


@pytest.mark.unit
def test_postgres_holds_airflow_and_mlflow_databases(services: dict[str, dict[str, Any]]) -> None:
    init_mounts = [v for v in services["postgres"]["volumes"] if "/docker-entrypoint-initdb.d/" in v]
    assert len(init_mounts) == 1
    script = ROOT / init_mounts[0].split(":")[0]
    assert script.stat().st_mode & 0o111, "the postgres image sources a non-executable script"
    text = script.read_text()
    for database in ("airflow", "mlflow"):
        assert f"CREATE DATABASE {database} OWNER {database};" in text
    backend = _environment(services["mlflow"])["MLFLOW_BACKEND_STORE_URI"]
    assert backend.startswith("postgresql+psycopg2://mlflow:") and backend.endswith("@postgres:5432/mlflow")


@pytest.mark.unit
def test_mlflow_serves_artifacts_from_a_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    command = services["mlflow"]["command"]
    assert command[:2] == ["mlflow", "server"]
    assert "--serve-artifacts" in command
    destination = next(arg.split("=", 1)[1] for arg in command if arg.startswith("--artifacts-destination="))
    volume = next(v for v in services["mlflow"]["volumes"] if v.endswith(f":{destination}"))
    assert volume.split(":")[0] in compose["volumes"]
    # Workers send Host: mlflow:5000; MLflow's default allow-list would answer them 403.
    allowed = next(arg for arg in command if arg.startswith("--allowed-hosts=")).split("=", 1)[1]
    assert "mlflow:5000" in allowed.split(",")


@pytest.mark.unit
def test_published_ports_bind_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    published = {name: service.get("ports", []) for name, service in services.items()}
    for name, ports in published.items():
        for port in ports:
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), (name, port)
    assert not published["postgres"] and not published["redis"]
    assert published["airflow-apiserver"] == ["127.0.0.1:${AIRFLOW_HOST_PORT:-8081}:8080"]
    assert published["mlflow"] == ["127.0.0.1:${MLFLOW_HOST_PORT:-5000}:5000"]


@pytest.mark.unit
def test_no_secret_is_a_literal(services: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for name, service in services.items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key):
                assert ONLY_A_REFERENCE.match(value), f"{name}: {key} must be a ${{VAR}} from .env"
                checked += 1
            # A password inside a URL or connection string: a reference too.
            for match in re.finditer(r"://[^:/@]*:([^@]*)@|password=([^,]*)", value):
                secret = match.group(1) or match.group(2)
                assert ONLY_A_REFERENCE.match(secret), f"{name}: {key} holds a literal password"
                checked += 1
    assert checked >= 10


@pytest.mark.unit
def test_every_required_variable_is_in_env_example(compose: dict[str, Any]) -> None:
    example = _env_example()
    references = [m for text in _strings(compose) for m in REFERENCE.finditer(text)]
    required = {m["name"] for m in references if m["op"] in (None, ":?", "?")}
    assert required and required <= set(example), required - set(example)
    assert {m["name"] for m in references} <= set(example) | {"HOSTNAME"}
    # Placeholders only: a real secret in .env.example would be committed.
    for name in required:
        if SECRET_NAME.search(name):
            assert example[name] == "change-me", name


@pytest.mark.unit
def test_images_are_pinned(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    example = _env_example()
    for name, service in services.items():
        image = REFERENCE.sub(
            lambda m: m["rest"] if m["op"] == ":-" else example[m["name"]], service["image"]
        )
        repository, _, tag = image.rpartition(":")
        assert repository and tag and "/" not in tag and tag != "latest", (name, image)
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7.4"
    # mlflow and Airflow run the project image, built from docker/Dockerfile.
    assert services["mlflow"]["image"] == compose["x-airflow-common"]["image"]
    assert services["mlflow"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert (ROOT / "docker" / "Dockerfile").read_text().startswith("# syntax=docker/dockerfile:1\n")


@pytest.mark.unit
def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name in ("postgres", "redis", "mlflow", *AIRFLOW_SERVICES):
        assert services[name]["healthcheck"]["test"], name
    assert "airflow-init" not in {name for name, s in services.items() if "healthcheck" in s}


@pytest.mark.unit
def test_dockerfile_installs_the_project_with_cpu_torch() -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert re.search(r"pip install .*--extra-index-url \"\$\{TORCH_INDEX_URL\}\" -c \S+constraints", text)
    assert "-r docker/requirements.txt" in text
    for line in (ROOT / "docker" / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][0-9A-Za-z.]*", line), line


@pytest.mark.unit
def test_env_file_is_gitignored() -> None:
    if shutil.which("git") and (ROOT / ".git").exists():
        ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", ".env"], check=False)
        assert ignored.returncode == 0, "add `.env` to .gitignore: it holds the stack's secrets"
        tracked = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", ".env.example"], check=False)
        assert tracked.returncode == 1, ".env.example must stay committed"
    else:
        patterns = (ROOT / ".gitignore").read_text().splitlines()
        assert ".env" in patterns or "/.env" in patterns


def _compose_command() -> list[str] | None:
    """`docker compose` (the CLI plugin) or a v2 `docker-compose`; None when neither is installed."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    standalone = shutil.which("docker-compose")
    if standalone:
        probe = subprocess.run([standalone, "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0 and " v2." in probe.stdout:
            return [standalone]
    return None


@pytest.mark.unit
def test_docker_compose_config_accepts_the_file() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("Docker Compose v2 is not installed (`docker compose config` needs no engine)")
    result = subprocess.run(
        [
            *command,
            "--project-directory",
            str(ROOT),
            "-f",
            str(COMPOSE_FILE),
            "--env-file",
            str(ENV_EXAMPLE),
            "config",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # Without a value for a required secret, compose refuses to start and names it.
    missing = subprocess.run(
        [
            *command,
            "--project-directory",
            str(ROOT),
            "-f",
            str(COMPOSE_FILE),
            "--env-file",
            "/dev/null",
            "config",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert missing.returncode != 0 and "in .env" in missing.stderr


def test_make_stack_runs_the_same_configuration_from_the_same_env_file(compose):
    """scripts/stack.py (make stack) and docker-compose.yaml: the same Airflow and recsys settings
    (host ports and folders instead of service names and volumes) from one env file layout."""
    from recsys.ops import stack

    names = stack.template_names()
    assert names == list(_env_example())
    values = {name: f"<{name}>" for name in names}
    ours = stack.environment(values, Path("/stack"), cores=2, workers=2)
    theirs = _environment(compose["x-airflow-common"])
    # compose-only: the scheduler's container health check, the image's data folder
    assert set(theirs) - set(ours) == {
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST",
        "RECSYS__PATHS__DATASETS",
    }
    # stack-only: one host for every service (AIRFLOW_HOME, the worker names), executor sizing
    assert set(ours) - set(theirs) == {
        "AIRFLOW_HOME",
        "AIRFLOW__API__BASE_URL",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE",
        "AIRFLOW__CORE__PARALLELISM",
    }
    for key in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__AUTH_MANAGER", "AIRFLOW__CORE__LOAD_EXAMPLES",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION", "RECSYS__SCORE__THREADS",
                "RECSYS__LOCKS__BACKEND"):  # fmt: skip
        assert ours[key] == theirs[key], key
    # every secret reaches the stack from the env file, as compose interpolates it
    for key, value in ours.items():
        if key in theirs:
            for name in re.findall(r"\$\{(\w+)", theirs[key]):
                if name.endswith("PASSWORD") or name.endswith(("KEY", "SECRET")):
                    assert f"<{name}>" in value, (key, name)
    assert ours["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert ours["MLFLOW_TRACKING_PASSWORD"] == "<MLFLOW_ADMIN_PASSWORD>"


def test_stack_env_file_is_generated_private_and_refused_when_readable(tmp_path, monkeypatch):
    from recsys.config import ConfigError
    from recsys.ops import stack

    for name in stack.template_names():
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / ".env"
    values = stack.ensure_env(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert "change-me" not in values.values() and set(values) == set(stack.template_names())
    passwords = [values[k] for k in values if k.endswith("PASSWORD")]
    assert len(passwords) == len(set(passwords)) == 7  # each secret its own
    assert stack.ensure_env(path) == values  # kept, not regenerated
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        stack.ensure_env(path)
    path.chmod(0o600)
    path.write_text(path.read_text().replace(values["REDIS_PASSWORD"], "change-me"))
    with pytest.raises(ConfigError, match="REDIS_PASSWORD"):
        stack.ensure_env(path)
