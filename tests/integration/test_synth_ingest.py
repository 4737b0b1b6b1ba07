"""A synthetic release goes through the real `recsys ingest --dataset ml-20m --source DIR`.

Both commands run as the installed console script, in a temporary RECSYS_HOME, with no network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

RECSYS = str(Path(sys.executable).with_name("recsys"))


def _run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS")}
    return subprocess.run(
        [RECSYS, *args], env={**env, "RECSYS_HOME": str(home)}, capture_output=True, text=True, timeout=300
    )


def test_synthetic_release_ingests_and_validates_as_ml20m(tmp_path: Path) -> None:
    release, home = tmp_path / "synthetic-ml-20m", tmp_path / "home"
    made = _run(
        home,
        "synth",
        "--users",
        "300",
        "--movies",
        "500",
        "--ratings",
        "24000",
        "--seed",
        "5",
        "--out",
        str(release),
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["ratings"] == 24_000

    ingested = _run(home, "ingest", "--dataset", "ml-20m", "--source", str(release))
    assert ingested.returncode == 0, ingested.stderr
    summary = json.loads(ingested.stdout)
    assert summary["dataset"] == "ml-20m" and summary["data_version"].endswith(".dir")
    assert summary["validation"]["success"] and summary["validation"]["rows"] == 24_000
    raw = Path(summary["raw_dir"])
    assert raw == home.resolve() / "data" / "raw" / "ml-20m"
    for name in ("ratings.csv", "movies.csv", "tags.csv", "README.txt"):
        assert (raw / name).read_bytes() == (release / name).read_bytes()
