"""Run a command tree and stop all of it on Ctrl-C or SIGTERM, within a bound (`make airflow`).

`airflow standalone` alone took over 70 s to exit on Ctrl-C while it waited for its executor's
workers, and after SIGTERM it left those workers behind, re-parented to init. Here the command runs
in a session of its own. On SIGINT or SIGTERM, every process of that session gets SIGTERM. Whatever
is still there after GRACE_S seconds gets SIGKILL, orphans included: they keep the session id.

    python scripts/supervise.py COMMAND [ARG...]
Exits with the command's exit code, or 128 + the signal that stopped it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

GRACE_S = 8.0  # SIGTERM -> SIGKILL; the whole stop stays well under 15 s


def session(sid: int) -> list[psutil.Process]:
    """Every live process of session ``sid`` (a command's descendants keep it unless they setsid)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def stop(leader: subprocess.Popen) -> None:
    """SIGTERM to the session, SIGKILL to what is left after GRACE_S (and to late children)."""
    procs = session(leader.pid)
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and session(leader.pid):
        leader.poll()  # reap the leader so it does not linger as a zombie
        time.sleep(0.2)
    for proc in session(leader.pid):
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=2)
    leader.wait(timeout=5)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-2].strip(), file=sys.stderr)
        return 2
    leader = subprocess.Popen(argv, start_new_session=True)
    received: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda number, _frame: received.append(number))
    while leader.poll() is None and not received:
        time.sleep(0.2)
    if received:
        print(
            f"stopping {os.path.basename(argv[0])} and everything it started ...", file=sys.stderr, flush=True
        )
        stop(leader)
        return 128 + received[0]
    for orphan in session(leader.pid):  # the command exited on its own: leave nothing behind
        orphan.kill()
    return leader.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
