"""One run at a time (recsys.ops.locks): a real second process holds the lock; the kernel frees it."""

import os
import signal
import subprocess
import sys
import time

import pytest

from recsys.config import load_settings
from recsys.errors import LockedError
from recsys.ops import locks
from recsys.pipelines import score_nightly

pytestmark = pytest.mark.unit

HOLD = """
import sys, time
from recsys.ops import locks
from recsys.config import load_settings
with locks.hold(load_settings(env={"RECSYS_HOME": sys.argv[1]}), *sys.argv[2:]):
    print("held", flush=True)
    time.sleep(120)
"""


def holder_process(home, *names: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(home), *names], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_fails_naming_the_holder_and_goes_once_it_is_gone(tmp_path):
    settings = load_settings(env={"RECSYS_HOME": str(tmp_path)})
    proc = holder_process(tmp_path, "publish")
    try:
        with pytest.raises(LockedError, match=rf"publish lock is held by pid {proc.pid} on "):
            with locks.hold(settings, "publish"):
                pass
        # a step that needs it refuses before doing anything: publish of a file that does not exist
        with pytest.raises(LockedError, match=f"pid {proc.pid}"):
            score_nightly.publish(settings, str(tmp_path / "missing.parquet"))
        start = time.monotonic()
        with pytest.raises(LockedError):
            with locks.hold(settings, "data", "publish", wait_s=0.5):
                pass
        assert time.monotonic() - start >= 0.5
        with locks.hold(settings, "data", "model"):  # other locks stay free
            assert locks.holder(settings, "data")["pid"] == os.getpid()
    finally:
        proc.send_signal(signal.SIGKILL)  # dies without releasing anything itself
        proc.wait()
    with locks.hold(settings, "publish"):  # the kernel dropped the dead holder's lock
        assert locks.holder(settings, "publish")["pid"] == os.getpid()
    assert locks.holder(settings, "publish") is None  # released: nobody is named any more


def test_waiting_gets_the_lock_when_the_holder_finishes(tmp_path, monkeypatch):
    from types import SimpleNamespace

    settings = load_settings(env={"RECSYS_HOME": str(tmp_path)})
    proc = holder_process(tmp_path, "model")
    waited = []

    def first_poll_kills_the_holder(seconds: float) -> None:
        # called only after a try found the lock taken: the holder dies while we wait, not before
        if not waited:
            proc.send_signal(signal.SIGKILL)
            proc.wait()  # reaped: the kernel has dropped its lock
        waited.append(seconds)
        time.sleep(seconds)

    # recsys.locks polls with time.sleep between tries: its clock, with that sleep, for this test
    monkeypatch.setattr(
        locks, "time", SimpleNamespace(monotonic=time.monotonic, sleep=first_poll_kills_the_holder)
    )
    try:
        with locks.hold(settings, "model", wait_s=30):
            assert locks.holder(settings, "model")["pid"] == os.getpid()
    finally:
        proc.kill()
        proc.wait()
    assert waited, "the lock was free at the first try: nothing waited"
    with pytest.raises(ValueError, match="unknown lock"):
        with locks.hold(settings, "nope"):
            pass
