"""One run at a time where it matters: named locks, in files or in Redis.

- ``data``: ingest and prepare (they write the raw snapshot and the prepared data), and publish,
  which must not start while the data it was scored from is being replaced;
- ``model``: retraining (train, compare, promote move the registry's aliases);
- ``publish``: writing lists into the online store.

Backend ``file`` (setting ``locks.backend``, the default): an ``flock`` on ``<name>.lock``; the
kernel drops it when its process dies, however it dies, so a crash never leaves a stale lock behind.
Backend ``redis`` (``make stack``, compose: workers may sit on several hosts): a key
``recsys:lock:<name>`` in the online store's Redis, set only if absent, with a TTL of
``locks.ttl_s`` that a thread of the holder renews every third of it; the holder deletes it (only
if still its own) when done, and a killed holder's lock lapses after ``ttl_s``.
The holder writes who it is (pid, host, command, since when) into the file or key, and a second
run that cannot get the lock within ``wait_s`` fails with :class:`LockedError` naming that holder.
Several locks are always taken in the order of :data:`ORDER`, so two runs never wait on each other
in a circle.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from recsys.config import Settings
from recsys.errors import LockedError
from recsys.home import locks_dir

# similar_model / similar_publish: the movie_similar model and its Feast view have writers of their
# own, which run beside the two-tower's (Celery runs both retrain branches at once)
ORDER = ("data", "model", "similar_model", "publish", "similar_publish")
POLL_S = 0.2
REDIS_PREFIX = "recsys:lock:"
# Renew or delete the key only while it still holds this holder's token.
_MINE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call("
_RENEW = _MINE + "'pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = _MINE + "'del', KEYS[1]) end return 0"


lock_dir = locks_dir  # the file backend's folder


def holder(settings: Settings, name: str) -> dict | None:
    """What the last holder of lock ``name`` wrote about itself (None if nothing readable)."""
    try:
        return json.loads((lock_dir(settings) / f"{name}.lock").read_text() or "null")
    except (OSError, ValueError):
        return None


def held_by(settings: Settings, name: str) -> dict | None:
    """The holder of lock ``name`` if someone holds it now, else None (a dead holder's note is
    ignored: the kernel released its lock)."""
    if settings.locks.backend == "redis":
        raw = _redis(settings).get(REDIS_PREFIX + name)
        return None if raw is None else json.loads(raw)
    path = lock_dir(settings) / f"{name}.lock"
    if not path.is_file():
        return None
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return holder(settings, name) or {}
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def _describe(info: dict | None) -> str:
    if not info:
        return "another process (no details recorded)"
    return f"pid {info.get('pid')} on {info.get('host')} ({info.get('command')}, since {info.get('since')})"


def _me() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:3]]).strip(),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _locked_error(name: str, info: dict | None) -> LockedError:
    return LockedError(
        f"the {name} lock is held by {_describe(info)}; wait for it to finish (or stop it) and run again"
    )


def _redis(settings: Settings):  # noqa: ANN202
    from recsys.ops import redis_server

    return redis_server.client(settings.redis_connection)


@contextmanager
def _one_redis(settings: Settings, name: str, wait_s: float) -> Iterator[None]:
    from redis.exceptions import RedisError

    from recsys.errors import StoreError

    conn, key = _redis(settings), REDIS_PREFIX + name
    ttl_ms = int(settings.locks.ttl_s * 1000)
    info = {**_me(), "token": os.urandom(16).hex()}
    value = json.dumps(info)
    deadline = time.monotonic() + wait_s
    try:
        while not conn.set(key, value, nx=True, px=ttl_ms):
            if time.monotonic() >= deadline:
                raw = conn.get(key)
                raise _locked_error(name, None if raw is None else json.loads(raw))
            time.sleep(POLL_S)
    except RedisError as exc:
        raise StoreError(f"cannot take the {name} lock in Redis at {settings.redis_address}: {exc}") from exc
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(settings.locks.ttl_s / 3):
            try:
                conn.eval(_RENEW, 1, key, value, ttl_ms)
            except RedisError:
                continue  # Redis restarting: try again at the next beat

    beat = threading.Thread(target=renew, name=f"lock-{name}", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        try:
            conn.eval(_RELEASE, 1, key, value)
        except RedisError:
            pass  # it lapses after ttl_s


@contextmanager
def _one(settings: Settings, name: str, wait_s: float) -> Iterator[None]:
    if name not in ORDER:
        raise ValueError(f"unknown lock {name!r}; locks are {ORDER}")
    if settings.locks.backend == "redis":
        with _one_redis(settings, name, wait_s):
            yield
        return
    folder = lock_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "a+") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _locked_error(name, holder(settings, name)) from None
                time.sleep(POLL_S)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(_me()))
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()  # released: nobody holds it now
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def hold(settings: Settings, *names: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the named locks (taken in :data:`ORDER`) for the block.

    Raises LockedError naming the holder when one is still taken after ``wait_s`` seconds, and
    ValueError for an unknown name.
    """
    with ExitStack() as stack:
        for name in sorted(set(names), key=lambda n: ORDER.index(n) if n in ORDER else -1):
            stack.enter_context(_one(settings, name, wait_s))
        yield


def locked(*names: str) -> Callable[[Callable], Callable]:
    """Decorate a pipeline step whose first argument is the Settings: it runs under :func:`hold`."""

    def wrap(step: Callable) -> Callable:
        @functools.wraps(step)
        def run(settings: Settings, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            with hold(settings, *names):
                return step(settings, *args, **kwargs)

        return run

    return wrap
