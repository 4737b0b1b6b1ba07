"""Commands of the services: the HTTP endpoint (serve) and the embedded Redis (up, down)."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from recsys.cli.common import (
    Add,
    positive_arg,
    settings_for,
    tcp_port_arg,
)
from recsys.errors import RecsysError


def cmd_up(args: argparse.Namespace) -> None:
    from recsys.ops import redis_server

    print(f"redis listening on {redis_server.ensure_running(settings_for(args))}")


def cmd_down(args: argparse.Namespace) -> None:
    from recsys.ops import redis_server

    stopped = redis_server.stop(settings_for(args))
    print("stopped the embedded redis" if stopped else "nothing was running")


# A worker is a process with its own copy of the model: the Python work of a request holds the GIL,
# so one process per core. A request takes milliseconds; the timeout only bounds a stuck one.
SERVE_WORKERS = 2


SERVE_TIMEOUT_S = 10


def _port_free(host: str, port: int) -> None:
    """RecsysError (one line) when nothing can listen on host:port: in use, or a bad host."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise RecsysError(f"cannot serve on host {host!r}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(address)
        except OSError as exc:
            reason = "it is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise RecsysError(f"cannot serve on {host}:{port}: {reason}; choose another --port") from None


def cmd_serve(args: argparse.Namespace) -> None:
    import tempfile

    from recsys.errors import ModelNotFoundError
    from recsys.ops import redis_server
    from recsys.ops.registry import Registry

    settings = settings_for(args)
    _port_free(args.host, args.port)  # every check before anything starts
    models = Registry.open(settings)
    version = str(models.resolve(args.model).version)
    folder = settings.paths.home / "serving"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _, local = models.download_model(version, Path(tempfile.mkdtemp(dir=folder)))
    except Exception as exc:  # MLflow's or the artefact store's error, whatever its class
        raise ModelNotFoundError(
            f"cannot download {settings.mlflow.model_name} version {version} from "
            f"{settings.tracking_address}: {str(exc).splitlines()[0][:200]}"
        ) from exc
    redis_server.ensure_running(settings)
    bin_dir = os.path.dirname(sys.executable)
    env = {
        **os.environ,
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "REDIS_CONNECTION_STRING": settings.redis_connection,
        "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": str(args.timeout),
        "__pyfunc_model_path__": str(local),  # recsys.serving.http.MODEL_PATH_ENV, as mlflow sets it
    }
    if args.config:
        env["RECSYS_CONFIG"] = str(Path(args.config).resolve())
    # MLflow's own scoring app (as `mlflow models serve` runs it) behind recsys.serving.http's guard
    command = [
        os.path.join(bin_dir, "uvicorn"),
        "--factory",
        "recsys.serving.http:create_app",
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        str(args.workers),
    ]
    print(
        f"serving {settings.mlflow.model_name} version {version} ({args.model}) on "
        f"http://{args.host}:{args.port}/invocations ({args.workers} worker(s))",
        flush=True,
    )
    os.execvpe(command[0], command, env)


def register(add: Add) -> None:
    """Add this module's sub-commands."""
    add("up", cmd_up, "start the embedded Redis on 127.0.0.1 (idempotent)")
    add("down", cmd_down, "stop the services the project started")
    p = add(
        "serve",
        cmd_serve,
        "serve a two_tower version over HTTP: MLflow's scoring app (as `mlflow models serve` runs it) "
        "behind a guard that refuses malformed requests with a 400 or 413",
    )
    p.add_argument(
        "--model", default="champion", help="registered version number (3) or alias (default champion)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=tcp_port_arg, default=5001, help="TCP port, 1..65535 (default 5001)")
    p.add_argument(
        "--workers",
        type=positive_arg,
        default=SERVE_WORKERS,
        help=f"server processes, each with the model loaded (default {SERVE_WORKERS}: "
        "one per core of a 2-core machine)",
    )
    p.add_argument(
        "--timeout",
        type=positive_arg,
        default=SERVE_TIMEOUT_S,
        help=f"seconds before a request is answered 504 (default {SERVE_TIMEOUT_S})",
    )
