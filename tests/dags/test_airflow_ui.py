"""`make airflow` (scripts/airflow.sh): a real browser logs in to its UI and finds the three DAGs;
the executor is sized for the machine, and Ctrl-C stops every process it started within 15 s, the
executor's workers included. The screenshot goes to tests/artefacts/ (git ignores it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.ports import free_port

pytestmark = pytest.mark.dags
ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = ROOT / "tests" / "artefacts"
DAG_IDS = ("recsys_ingest", "recsys_retrain", "recsys_score_nightly")
# Chromium as root on a machine without outside network: no sandbox, no GPU, no background fetches
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


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


def _title(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:  # gone since it was listed
        return ""


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """`make airflow`'s script on a free port in a tmp home, in its own process group (as a
    terminal's foreground job, which Ctrl-C signals as a whole); killed in teardown if still up."""
    home = tmp_path_factory.mktemp("embedded")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS"))}
    env.update(
        AIRFLOW_HOME=str(home / "airflow"),
        RECSYS_HOME=str(home / "recsys"),
        RECSYS_AIRFLOW_PORT=str(port),
        RECSYS_AIRFLOW_PARALLELISM="2",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="10",
    )
    script = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "airflow.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        process_group=0,
    )
    try:
        deadline = time.monotonic() + 240
        while not _healthy(port):
            assert script.poll() is None, script.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the api-server did not answer in 240 s"
            time.sleep(1)
        yield {"script": script, "port": port, "home": home}
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)


def test_the_ui_logs_in_and_lists_the_three_dags_in_headless_chromium(embedded):
    """Debian's chromium, driven by Playwright (executable_path: no browser download)."""
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("RECSYS_CHROMIUM", "/usr/bin/chromium")
    assert os.access(chromium, os.X_OK), f"no chromium at {chromium}: run `make browser`"
    passwords = embedded["home"] / "airflow" / "simple_auth_manager_passwords.json.generated"
    deadline = time.monotonic() + 60
    while not passwords.exists():
        assert time.monotonic() < deadline, f"no {passwords.name} 60 s after the api-server answered"
        time.sleep(1)
    password = json.loads(passwords.read_text())["admin"]
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{embedded['port']}"
    with sync_playwright() as play:
        browser = play.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base}/")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "/auth/" not in url, timeout=60_000)
            deadline = time.monotonic() + 120
            while True:  # the dag-processor parses dags/ a few seconds after the start
                page.goto(f"{base}/dags")
                try:
                    for dag_id in DAG_IDS:
                        page.get_by_text(dag_id, exact=True).first.wait_for(timeout=10_000)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        page.screenshot(path=str(ARTEFACTS / "airflow-dags-missing.png"), full_page=True)
                        raise
            page.screenshot(path=str(ARTEFACTS / "airflow-dags.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTEFACTS / "airflow-dags.png").stat().st_size > 10_000


def test_ctrl_c_stops_everything_within_15_seconds(embedded):
    script = embedded["script"]
    started: list[psutil.Process] = []
    try:
        # the scheduler forks its executor's workers (all at once) some time after the api-server answers
        deadline = time.monotonic() + 120
        while True:
            started = _descendants(script.pid)
            titles = [_title(p) for p in started]
            workers = [t for t in titles if "LocalExecutor" in t]
            serving = any("scheduler" in t for t in titles) and any("api_server" in t for t in titles)
            if serving and len(workers) >= 2:
                break
            assert time.monotonic() < deadline, f"no scheduler with 2 executor workers in 120 s: {titles}"
            time.sleep(0.5)
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
