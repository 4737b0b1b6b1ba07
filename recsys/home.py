"""Every folder under ``$RECSYS_HOME`` (setting ``paths.home``), named in one place.

```
<home>/data/                     the DVC workspace (recsys.data.snapshots)
        raw/<dataset>/           raw snapshot          prepared/<dataset>/   prepared data
        pairs/<dataset>/         pairwise table of similar movies
<home>/data_docs/<suite>/        great-expectations Data Docs of a failed validation
<home>/scores/v<N>/<data>/       one model version's lists for one data version
<home>/similar/v<N>/             one movie_similar version's lists
<home>/models/<model>/v<N>-<run> downloaded model bundles
<home>/locks/  <home>/redis/     named locks; the embedded Redis server
```
May import only ``recsys.config``.
"""

from __future__ import annotations

from pathlib import Path

from recsys.config import Settings


def workspace(settings: Settings) -> Path:
    """The DVC workspace folder (see recsys.data.snapshots.init_workspace)."""
    return settings.paths.home.resolve() / "data"


def raw_dir(settings: Settings, dataset: str | None = None) -> Path:
    """Raw snapshot folder ``raw/<dataset>`` (default ``settings.data.dataset``)."""
    return workspace(settings) / "raw" / (dataset or settings.data.dataset)


def prepared_dir(settings: Settings, dataset: str | None = None) -> Path:
    """Prepared data folder ``prepared/<dataset>`` (default ``settings.data.dataset``)."""
    return workspace(settings) / "prepared" / (dataset or settings.data.dataset)


def pairs_dir(settings: Settings, dataset: str | None = None) -> Path:
    """The pairwise table's folder ``pairs/<dataset>`` in the DVC workspace."""
    return workspace(settings) / "pairs" / (dataset or settings.data.dataset)


def data_docs(settings: Settings) -> Path:
    """Where a failed validation writes its Data Docs page (one folder per suite)."""
    return settings.paths.home / "data_docs"


def scores_dir(settings: Settings, model_version: str, data_version: str) -> Path:
    """Where one model version's lists for one data version are written."""
    return settings.paths.home / "scores" / f"v{model_version}" / data_version.replace(".dir", "")[:16]


def similar_dir(settings: Settings, model_version: str) -> Path:
    """Where one movie_similar version's lists are written."""
    return settings.paths.home / "similar" / f"v{model_version}"


def models_dir(settings: Settings, model_name: str) -> Path:
    """The cache of downloaded bundles of one registered model."""
    return settings.paths.home / "models" / model_name


def locks_dir(settings: Settings) -> Path:
    """Lock files of the ``file`` lock backend."""
    return settings.paths.home / "locks"


def redis_dir(settings: Settings) -> Path:
    """The embedded Redis server's config, data, pid and log."""
    return settings.paths.home / "redis"
