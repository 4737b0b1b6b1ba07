"""The Feast repo (``paths.feature_repo``): the FeatureStore pointed at the settings' Redis, the
registration of the repo's objects (``feast apply``), and the Redis layout Feast uses for a view.

The only module that imports ``feast`` (7-8 s: it pulls in torch and cloud SDKs), always inside
the functions that need it. A night need not pay for it: each apply leaves a registration record
(``data/registration.json`` beside the registry) with a fingerprint of the repo's definition files,
the registry file's md5 and the Redis layout of every view. While both still match, the repo is
registered as it stands, so :func:`apply` has nothing to do and the fast writer takes the layouts
from the record (:func:`registered_layouts`), with no Feast import. Editing a definition, changing
feature_store.yaml or touching the registry any other way invalidates the record; the next apply
registers through Feast again.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.config import Settings
from recsys.errors import StoreError
from recsys.files import md5 as file_md5
from recsys.files import write_text
from recsys.online import layout
from recsys.ops import redis_server

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)
REPO_MODULES = ("entities", "data_sources", "feature_views", "feature_services")
REGISTRATION = "registration.json"  # under the repo's data/, beside the file registry


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """Set one environment variable for the block and restore it, so it never leaks into settings."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def feature_store(settings: Settings) -> FeatureStore:
    """Build the FeatureStore of ``paths.feature_repo`` pointed at ``store.connection_string``.

    feature_store.yaml reads ``${REDIS_CONNECTION_STRING}``, which Feast expands (os.path.expandvars,
    no default syntax) while the config is loaded here. Raises StoreError when the repo is missing.
    """
    repo = settings.paths.feature_repo
    if not (repo / "feature_store.yaml").is_file():
        raise StoreError(f"no feature_store.yaml in {repo}; set paths.feature_repo to the Feast repo")
    from feast import FeatureStore

    with _environment("REDIS_CONNECTION_STRING", settings.redis_connection):
        return FeatureStore(repo_path=str(repo))


def repo_objects(repo: Path) -> list[Any]:
    """Import the repo's definition modules (as `feast apply` would) and return their Feast objects."""
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    sys.path.insert(0, str(repo))
    try:
        for name in REPO_MODULES:  # generic names like "entities": never reuse another repo's copy
            sys.modules.pop(name, None)
        modules = [importlib.import_module(name) for name in REPO_MODULES]
    finally:
        sys.path.remove(str(repo))
        for name in REPO_MODULES:
            sys.modules.pop(name, None)
    kinds = (DataSource, Entity, FeatureView, FeatureService)
    found: dict[int, Any] = {}
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, kinds):
                found.setdefault(id(value), value)
    return list(found.values())


def _fingerprint(repo: Path) -> str:
    """sha256 of feature_store.yaml and the definition modules: what ``feast apply`` registers."""
    digest = hashlib.sha256()
    for name in ("feature_store.yaml", *(f"{m}.py" for m in REPO_MODULES)):
        path = repo / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"") + b"\0")
    return digest.hexdigest()


def _md5(path: Path) -> str:
    return file_md5(path) if path.is_file() else ""


def _registry_file(store: FeatureStore, repo: Path) -> Path | None:
    """The local registry file of ``store``; None for a registry elsewhere (SQL, object store)."""
    registry = store.config.registry
    path = getattr(registry, "path", None) or (registry if isinstance(registry, str) else None)
    if not path or getattr(registry, "registry_type", "file") != "file" or "://" in str(path):
        return None
    return Path(path) if Path(path).is_absolute() else repo / path


def _record(settings: Settings, store: FeatureStore, names: list[str]) -> None:
    """Write the registration record of what was just applied (module docstring); none when the
    registry is not a local file or the store does not read Redis from the settings."""
    repo = settings.paths.feature_repo
    path = repo / "data" / REGISTRATION
    registry = _registry_file(store, repo)
    follows = getattr(store.config.online_store, "connection_string", None) == settings.redis_connection
    if registry is None or not registry.is_file() or not follows:
        path.unlink(missing_ok=True)
        return
    layouts = {}
    for view in store.list_feature_views():
        try:
            layouts[view.name] = asdict(view_layout(store, view.name))
        except StoreError:  # not for the fast writer: it asks Feast, which names the problem
            continue
    record = {
        "fingerprint": _fingerprint(repo),
        "registry": str(registry),
        "registry_md5": _md5(registry),
        "names": names,
        "layouts": {
            view: {
                **fields,
                "timestamp_key": fields["timestamp_key"].decode(),
                "features": [[c, f.hex(), kind] for c, f, kind in fields["features"]],
            }
            for view, fields in layouts.items()
        },
    }
    write_text(json.dumps(record, indent=2), path)


def _registration(settings: Settings) -> dict | None:
    """The registration record while it still describes the repo and its registry, else None."""
    repo = settings.paths.feature_repo
    try:
        record = json.loads((repo / "data" / REGISTRATION).read_text())
        current = record["fingerprint"] == _fingerprint(repo)
        return record if current and record["registry_md5"] == _md5(Path(record["registry"])) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def registered_layouts(settings: Settings) -> dict[str, ViewLayout]:
    """The layout of every view the fast writer can write, by view name, from a current registration
    record (no Feast import); empty when there is none (apply first, or ask :func:`view_layout`)."""
    record = _registration(settings) or {}
    return {
        view: ViewLayout(
            project=fields["project"],
            join_key=fields["join_key"],
            timestamp_field=fields["timestamp_field"],
            timestamp_key=fields["timestamp_key"].encode(),
            features=tuple((c, bytes.fromhex(f), kind) for c, f, kind in fields["features"]),
            ttl_seconds=fields["ttl_seconds"],
        )
        for view, fields in record.get("layouts", {}).items()
    }


def apply(settings: Settings) -> list[str]:
    """Register the repo's objects in the registry (`feast apply`), deleting views/services it dropped.

    Nothing to do (and no Feast import) while the registration record says the registry already
    holds the repo as it stands. Returns the names applied. Raises StoreError when Redis is unreachable.
    """
    redis_server.require(settings)
    if (record := _registration(settings)) is not None:
        log.info("Feast repo %s is registered as it stands", settings.paths.feature_repo)
        return list(record["names"])
    store = feature_store(settings)
    objects = repo_objects(settings.paths.feature_repo)
    names = {obj.name for obj in objects}
    stale: list[Any] = [fv for fv in store.list_feature_views() if fv.name not in names]
    stale += [fs for fs in store.list_feature_services() if fs.name not in names]
    store.apply(objects, objects_to_delete=stale, partial=False)
    log.info(
        "applied %d Feast objects to project %s (%d stale removed)", len(objects), layout.PROJECT, len(stale)
    )
    _record(settings, store, sorted(names))
    return sorted(names)


@dataclass(frozen=True)
class ViewLayout:
    """What Feast's Redis online store writes for one feature view, read from the registered repo."""

    project: str
    join_key: str  # the view's one Int64 entity column
    timestamp_field: str  # frame column of the event time (the batch source's timestamp_field)
    timestamp_key: bytes  # hash field of the event time: "_ts:<view>"
    features: tuple[tuple[str, bytes, str], ...]  # (frame column, hash field, Feast ValueType name)
    ttl_seconds: int | None  # EXPIRE after each HSET when feature_store.yaml sets key_ttl_seconds


def _unsupported_config(store: FeatureStore) -> list[str]:
    """Settings of the repo's online store that the fast writer does not reproduce."""
    config = store.config
    online = config.online_store
    problems = []
    if getattr(online, "type", None) != "redis":
        problems.append(f"online_store type {getattr(online, 'type', type(online).__name__)!r}")
    else:
        if online.redis_type.value != "redis":
            problems.append(f"online_store.redis_type {online.redis_type.value!r}")
        if not online.skip_dedup:  # Feast then reads each key's timestamp and skips older rows
            problems.append("online_store.skip_dedup false")
    if config.entity_key_serialization_version != 3:
        problems.append(f"entity_key_serialization_version {config.entity_key_serialization_version}")
    return problems


def view_layout(store: FeatureStore, view: str) -> ViewLayout:
    """The Redis layout Feast uses for ``view``, from ``store``'s config and registry.

    Raises StoreError naming every setting the fast writer does not implement (another online
    store type, Redis cluster or sentinel, ``skip_dedup: false``, another entity key serialization,
    a join key that is not one Int64, a field mapping, a feature type other than Array(Int64),
    Array(Float32) and String).
    """
    from feast.infra.online_stores.helpers import compute_versioned_name

    fv = store.get_feature_view(view)
    source = fv.batch_source
    problems = _unsupported_config(store)
    entities = [(e.name, e.dtype.to_value_type().name) for e in fv.entity_columns]
    if len(entities) != 1 or entities[0][1] != "INT64":
        problems.append(f"view {view} keyed by {entities}")
    if source is None:
        problems.append(f"view {view} without a batch source")
    elif source.field_mapping:
        problems.append(f"view {view} field_mapping {source.field_mapping}")
    kinds = {f.name: f.dtype.to_value_type().name for f in fv.features}
    problems += [
        f"feature {view}:{name} of type {kind}" for name, kind in kinds.items() if kind not in layout.ENCODERS
    ]
    if problems or source is None:
        raise StoreError(
            f"the fast online writer does not implement {'; '.join(problems)}; "
            "publish with writer='feast' or change feature_repo/"
        )
    name = compute_versioned_name(fv, store.config.registry.enable_online_feature_view_versioning)
    return ViewLayout(
        project=store.config.project,
        join_key=entities[0][0],
        timestamp_field=source.timestamp_field,
        timestamp_key=f"_ts:{name}".encode(),
        features=tuple((f, layout.field_key(name, f), kind) for f, kind in kinds.items()),
        ttl_seconds=store.config.online_store.key_ttl_seconds,
    )
