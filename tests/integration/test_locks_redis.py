"""Locks in Redis (locks.backend=redis, as make stack and compose set it): two processes with
separate homes, as two hosts would have, share the lock through the real Redis server."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recsys.config import Settings, load_settings
from recsys.errors import LockedError
from recsys.ops import locks
from recsys.pipelines import score_nightly

pytestmark = pytest.mark.integration

HOLD = """
import sys, time
from recsys.ops import locks
from recsys.config import load_settings
settings = load_settings([f"store.port={sys.argv[2]}", "locks.backend=redis", "locks.ttl_s=3"],
                         env={"RECSYS_HOME": sys.argv[1]})
with locks.hold(settings, "publish"):
    print("held", flush=True)
    time.sleep(120)
"""


def _settings(home: Path, redis: Settings) -> Settings:
    return load_settings(
        [f"store.port={redis.store.port}", "locks.backend=redis", "locks.ttl_s=3"],
        env={"RECSYS_HOME": str(home)},
    )


def test_a_redis_lock_names_its_holder_outlives_its_ttl_while_held_and_lapses_when_killed(
    own_redis, tmp_path
):
    here = _settings(tmp_path / "host-b", own_redis)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "host-a"), str(own_redis.store.port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        time.sleep(4)  # longer than the TTL: the holder renews it
        with pytest.raises(LockedError, match=rf"publish lock is held by pid {proc.pid} on "):
            with locks.hold(here, "publish"):
                pass
        assert locks.held_by(here, "publish")["pid"] == proc.pid
        with pytest.raises(LockedError, match=f"pid {proc.pid}"):  # the step refuses before anything
            score_nightly.publish(here, str(tmp_path / "missing.parquet"))
        with locks.hold(here, "data", "model"):  # other locks stay free
            pass
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # lapsed after the 3 s TTL: taken as soon as it has; 15 s of slack for a busy machine, still
        # short of the default ttl_s (30 s), so a lock that ignored locks.ttl_s=3 would fail here
        with locks.hold(here, "publish", wait_s=15):
            assert locks.held_by(here, "publish")["pid"] != proc.pid
        assert locks.held_by(here, "publish") is None  # released on exit
    finally:
        proc.kill()
