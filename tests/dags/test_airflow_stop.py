"""`make airflow` (scripts/airflow.sh): the executor is sized for the machine, and Ctrl-C stops
every process it started within 15 s, the executor's workers included."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.dags.conftest import free_port

pytestmark = pytest.mark.dags
ROOT = Path(__file__).resolve().parents[2]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_ctrl_c_stops_everything_within_15_seconds(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        RECSYS_HOME=str(tmp_path / "recsys"),
        RECSYS_AIRFLOW_PORT=str(port),
        RECSYS_AIRFLOW_PARALLELISM="2",
    )
    # its own process group, as a terminal's foreground job: Ctrl-C signals the whole group
    script = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "airflow.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        process_group=0,
    )
    started: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 240
        while not _healthy(port):
            assert script.poll() is None, script.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the api-server did not answer in 240 s"
            time.sleep(1)
        time.sleep(3)  # the scheduler starts its executor's workers
        started = _descendants(script.pid)
        titles = [" ".join(p.cmdline()) for p in started]
        workers = [t for t in titles if "LocalExecutor" in t]
        assert any("scheduler" in t for t in titles) and any("api_server" in t for t in titles)
        assert len(workers) == 2, titles  # not Airflow's default of 32

        os.killpg(script.pid, signal.SIGINT)  # Ctrl-C
        begin = time.monotonic()
        script.wait(timeout=15)
        took = time.monotonic() - begin
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
        for proc in started:
            if proc.is_running():
                proc.kill()
    assert took < 15
    left = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [" ".join(p.cmdline()) for p in left]
    assert "stopping airflow and everything it started" in script.stdout.read()
