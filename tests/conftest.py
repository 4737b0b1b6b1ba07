"""The order the suite runs in, and how `make test` shares it between two pytest-xdist workers.

The stack test (tests/stack: a night on Postgres, Celery and Airflow's scheduler) is the longest
file by far and mostly waits on those services, so it goes first, on a worker of its own, while the
other worker takes the next longest files (ORDER), then the rest of the DAG and integration files,
then the unit files: the last file to start is a short one. Files are the units of work
(`--dist loadfile`, so a module's fixtures are built once), and a worker takes its next file only
when it is on the last test of its current one: with xdist's default a second file would queue
behind the stack test for minutes while the other worker runs dry.

Serial runs (`pytest` without `-n`) keep the same order and threads; nothing here changes what a
test checks.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers and the stack's services share 2 cores: one OpenMP thread per process (torch
    # reads it when first imported, which is after this; subprocesses inherit it). Two threads
    # each would spin-wait on each other's cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# The order files run in: the longest first (the stack, then the three files of a minute or more:
# the one-worker tail is a short file), then by directory; the short unit files fill in at the end.
ORDER = (
    "tests/stack/",
    "tests/dags/test_dag_runs.py",
    "tests/integration/test_chain.py",
    "tests/integration/test_replay_canary.py",
    "tests/dags/",
    "tests/integration/",
    "tests/unit/",
)


def _rank(item: pytest.Item) -> int:
    path = item.nodeid
    return next((i for i, prefix in enumerate(ORDER) if path.startswith(prefix)), len(ORDER))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: files and tests keep their order within a directory


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With `--dist loadfile`: xdist's file scheduler, handing out a file only to a worker that is
    on its last test (a worker holds its last test until it knows the next, hence not at zero)."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    config.option.loadscopereorder = False  # the order above, not xdist's "most tests first"

    class OneFileAhead(LoadFileScheduling):
        def _reschedule(self, node: Any) -> None:
            if node.shutting_down:
                return
            if not self.workqueue:
                node.shutdown()
                return
            if self._pending_of(self.assigned_work[node]) <= 1:
                self._assign_work_unit(node)

    return OneFileAhead(config, log)
