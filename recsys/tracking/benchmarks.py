"""Benchmark results as MLflow runs: a benchmark's JSON and plots, artefacts of one run in the
``mlflow.benchmark_experiment`` experiment of the settings' store (benchmarks/quality.py)."""

from __future__ import annotations

from pathlib import Path

import mlflow

from recsys.config import Settings
from recsys.ops.registry import BENCHMARKS, Registry


def log_benchmark(settings: Settings, files: list[Path], name: str) -> str:
    """Log ``files`` as the artefacts of a new run called ``name``; returns the run id."""
    with Registry.open(settings, BENCHMARKS).run() as active:
        mlflow.set_tag("mlflow.runName", name)
        for path in files:
            mlflow.log_artifact(str(path))
        return active.info.run_id
