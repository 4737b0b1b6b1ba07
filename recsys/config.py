"""One typed settings object for the whole project.

Resolution order (later wins): defaults in code, a YAML file (``--config`` or ``RECSYS_CONFIG``),
environment variables ``RECSYS__<SECTION>__<KEY>`` (plus the conventional ``MLFLOW_TRACKING_URI``
and ``REDIS_CONNECTION_STRING``), then ``section.key=value`` overrides from the command line
(``recsys train model.temperature=0.1 train.max_epochs=7``). Unknown keys are an error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, model_validator

from recsys.config_base import Section as _Section
from recsys.config_learning import HISTORY_TOWERS, ModelConfig, TrainConfig  # noqa: F401 (sections of Settings)
from recsys.errors import ConfigError
from recsys.redaction import redact

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENV_PREFIX = "RECSYS__"
MAX_K = 1000  # the longest list a model version may hold; lookups and HTTP ask for at most this


def _default_home() -> Path:
    env = os.environ.get("RECSYS_HOME")
    return Path(env) if env else PROJECT_ROOT / ".recsys"


class PathsConfig(_Section):
    home: Path = Field(default_factory=_default_home)  # all local state: data, mlflow, redis, scores
    datasets: Path = PROJECT_ROOT / "data"  # bundled releases (ml-latest-small), read-only
    feature_repo: Path = PROJECT_ROOT / "feature_repo"  # Feast repo (feature_store.yaml)


class DataConfig(_Section):
    dataset: Literal["ml-latest-small", "ml-20m"] = "ml-latest-small"
    source: Path | None = None  # local copy (zip or folder) to ingest instead of downloading
    rating_threshold: float = Field(4.0, ge=0.5, le=5.0)  # rating >= this is a positive
    min_user_interactions: int = Field(5, ge=1)  # cold-start filter, positives per user
    min_item_interactions: int = Field(5, ge=1)  # cold-start filter, positives per item


class ScoreConfig(_Section):
    k: int = Field(100, ge=10, le=MAX_K)  # list length (>= 10: the gate reads NDCG@10 off the lists)
    batch_size: int = Field(256, ge=1)  # users per ONNX Runtime call: 256 x 27k scores fit L3
    # ONNX Runtime and top-K threads per scoring process; 0 = every core. 1 where shards run side by
    # side, one per core (scripts/airflow.sh: the executor runs one task per core).
    threads: int = Field(0, ge=0)
    verify_sample: int = Field(20, ge=0)  # users read back from the store after publishing
    # users per nightly scoring task (recsys_score_nightly maps one task over each shard)
    shard_size: int = Field(25_000, ge=1)
    # store each recommended movie's reason ("because you liked X", recsys.runtime.explain)
    explain: bool = True
    # last places of each list kept for the best movies new since training (benchmarks/fresh_slots.py)
    fresh_slots: int = Field(5, ge=0)


class PromotionConfig(_Section):
    """How a challenger that passes the offline gate reaches users: at once (``offline``), or as the
    canary first, promoted or rolled back on its online evidence (recsys.tracking.promotion)."""

    mode: Literal["offline", "canary"] = "offline"
    canary_share: float = Field(0.1, gt=0.0, le=0.5)  # a tenth of the users carry the risk
    canary_nights: int = Field(7, ge=1)  # a week: every weekday once, and enough users on ML-20M
    # HitRate@10 (a share of users) the canary may lose and still be promoted: a retrain on fresher
    # data is worth a point of noise, not a real loss
    tolerance: float = Field(0.01, ge=0.0, le=1.0)
    min_users: int = Field(200, ge=2)  # per arm, before an early decision


class MLflowConfig(_Section):
    # default: sqlite under paths.home; MLFLOW_TRACKING_URI wins. A secret: a URI may carry a password.
    tracking_uri: SecretStr | None = None
    experiment: str = "two-tower"
    model_name: str = "two_tower"
    similar_experiment: str = "movie-similar"  # the item tower's runs (recsys.models.item_tower.model)
    similar_model_name: str = "movie_similar"
    online_experiment: str = "online"  # one run per night: how the served lists did (recsys report)
    benchmark_experiment: str = "benchmarks"  # benchmarks/*.py results and plots


class StoreConfig(_Section):
    host: str = "127.0.0.1"  # embedded Redis binds here; never 0.0.0.0 by default
    port: int = Field(6390, ge=1, le=65535)
    # an external Redis ("host:port[,password=...]"); REDIS_CONNECTION_STRING wins. A secret.
    connection_string: SecretStr | None = None
    # users of the last publication missing from a new one: remove their lists and histories, or keep
    stale_users: Literal["remove", "keep"] = "remove"


class DvcConfig(_Section):
    remote_url: str | None = None  # default: a directory under paths.home


class PairsConfig(_Section):
    """The pairwise table of "similar movies" (recsys.data.pairs)."""

    min_query_count: int = Field(10, ge=2)  # train positives a query movie needs
    min_support: int = Field(3, ge=1)  # users who liked both, for a positive
    shrink: float = Field(10.0, ge=0.0)  # shrunk cosine: c / (sqrt(n_i n_j) + shrink)
    min_positives: int = Field(5, ge=1)  # a query with fewer is left out
    max_positives: int = Field(20, ge=1)
    max_hard_negatives: int = Field(100, ge=0)
    # genre Jaccard + same decade + same band, with a genre in common. 1.2: a median of 52 hard
    # negatives per query on ml-latest-small (1.5: 13), the 50-100 the design asks for
    hard_min_match: float = Field(1.2, ge=0.0, le=3.0)
    popularity_bands: int = Field(5, ge=2)
    soft_sample: int = Field(5000, ge=1)  # opposite movies sampled per query ...
    soft_clusters: int = Field(500, ge=1)  # ... and reduced to this many k-means medoids
    block: int = Field(512, ge=1)  # query movies whose co-occurrence rows are computed at once
    seed: int = 0


class SimilarConfig(_Section):
    """The "similar movies" item tower, trained with a triplet loss on the pairwise table
    (recsys.models.item_tower.model), and its top-K lists (recsys.runtime.similar)."""

    embedding_dim: int = Field(64, ge=2)
    # two_tower: the id embeddings start from the two_tower champion's item vectors (by movie_id, unit
    # mean norm; a movie it lacks starts random), fine-tuned; random (also without a champion): scratch
    init: Literal["two_tower", "random"] = "two_tower"
    distance: Literal["cosine", "l2"] = "l2"  # cosine: 1 - cos; l2: Euclidean (benchmarks/similar.py chose)
    margin: float = Field(0.5, gt=0.0)  # [D(a, p) - D(a, n) + margin]+
    # batch_hard: each anchor's closest negative in the batch; semi_hard: its closest negative that
    # is still farther than the positive (FaceNet), the farthest when there is none
    mining: Literal["batch_hard", "semi_hard"] = "semi_hard"
    batch_size: int = Field(256, ge=2)  # (anchor, positive) rows per step
    hard_per_anchor: int = Field(4, ge=0)  # the table's hard negatives added to a batch per anchor
    soft_per_anchor: int = Field(1, ge=0)  # the table's soft negatives added to a batch per anchor
    random_per_batch: int = Field(256, ge=0)  # catalogue movies added to each batch, uniform
    id_dropout: float = Field(0.0, ge=0.0, le=1.0)  # rows reading the "unknown movie" id instead
    content_weight: float = Field(0.1, ge=0.0)  # weight of the triplet loss of content-only anchors
    learning_rate: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_epochs: int = Field(40, ge=1)
    patience: int = Field(5, ge=1)  # epochs without validation Recall@10 gain before stopping
    title_min_count: int = Field(2, ge=1)  # title words and tags of fewer movies are left out
    max_title_words: int = Field(8, ge=1)
    k: int = Field(20, ge=1, le=MAX_K)  # similar movies stored per movie
    batch_queries: int = Field(512, ge=1)  # movies per ONNX Runtime call when scoring
    fresh_slots: int = Field(1, ge=0)  # last places of a list a new movie may take (runtime.similar)
    seed: int = 0


class EventsConfig(_Section):
    """The daily event intake (recsys.data.events, recsys.data.eventlog)."""

    # a folder of dated files (YYYY-MM-DD.csv|.parquet) or an SQLAlchemy URL of the application's
    # database (postgresql://..., sqlite:///...). A secret: a URL may carry a password.
    # Default: the folder <paths.home>/events.
    source: SecretStr | None = None
    table: str = "ratings"  # SQL: the application's ratings table
    cursor: str = "id"  # SQL: an increasing column the application assigns on insert (the watermark)


class LocksConfig(_Section):
    # file: flock under paths.home/locks (one host). redis: keys in the online store's Redis, for
    # workers on several hosts (make stack and docker-compose.yaml set it)
    backend: Literal["file", "redis"] = "file"
    ttl_s: float = Field(30.0, gt=1.0)  # redis: a dead holder's lock lapses after this; renewed at 1/3


class Settings(_Section):
    paths: PathsConfig = Field(default_factory=PathsConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    mlflow: MLflowConfig = Field(default_factory=MLflowConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    dvc: DvcConfig = Field(default_factory=DvcConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    locks: LocksConfig = Field(default_factory=LocksConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    similar: SimilarConfig = Field(default_factory=SimilarConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)

    @model_validator(mode="after")
    def _fill_derived(self) -> Settings:
        if self.mlflow.tracking_uri is None:
            db = (self.paths.home / "mlflow" / "mlflow.db").resolve()
            self.mlflow.tracking_uri = SecretStr(f"sqlite:///{db}")
        if self.store.connection_string is None:
            self.store.connection_string = SecretStr(f"{self.store.host}:{self.store.port}")
        if self.events.source is None:
            self.events.source = SecretStr(str((self.paths.home / "events").resolve()))
        if self.dvc.remote_url is None:
            self.dvc.remote_url = str((self.paths.home / "dvc-remote").resolve())
        return self

    @property
    def mlflow_artifacts(self) -> Path:
        return self.paths.home / "mlflow" / "artifacts"

    @property
    def uses_embedded_redis(self) -> bool:
        """True when the project should start its own Redis on ``store.host:store.port``."""
        return self.redis_connection == f"{self.store.host}:{self.store.port}"

    @property
    def redis_connection(self) -> str:
        """The Redis connection string, password included: for clients only, never for output."""
        secret = self.store.connection_string
        return secret.get_secret_value() if secret is not None else ""

    @property
    def redis_address(self) -> str:
        """The Redis connection string with its password masked: for messages and logs."""
        return redact(self.redis_connection)

    @property
    def events_source(self) -> str:
        """The event source (folder or URL), credentials included: for clients only, never for output."""
        secret = self.events.source
        return secret.get_secret_value() if secret is not None else ""

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI, credentials included: for clients only, never for output."""
        secret = self.mlflow.tracking_uri
        return secret.get_secret_value() if secret is not None else ""

    @property
    def tracking_address(self) -> str:
        """The MLflow tracking URI with any password masked: for messages and logs."""
        return redact(self.tracking_uri)

    def public(self) -> dict[str, Any]:
        """Every setting by section, for logs, MLflow params and run artefacts: the secrets are
        shown redacted (passwords masked, host and port kept)."""
        tree = self.model_dump(mode="json")
        tree["mlflow"]["tracking_uri"] = self.tracking_address
        tree["store"]["connection_string"] = self.redis_address
        tree["events"]["source"] = redact(self.events_source)
        return tree

    def flat(self) -> dict[str, Any]:
        """Dotted-key view of :meth:`public` (MLflow params)."""
        out: dict[str, Any] = {}
        for section, values in self.public().items():
            for key, value in values.items():
                out[f"{section}.{key}"] = value
        return out


SECRET_SETTINGS = ("mlflow.tracking_uri", "store.connection_string", "events.source")  # never echoed


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=value"`` into (["a", "b"], parsed value); values are parsed as YAML scalars."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        raise ConfigError(f"override '{text}' is not of the form section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({_yaml_problem(exc)})") from None
    return parts, value


def _merge(tree: dict[str, Any], parts: list[str], value: Any, origin: str) -> None:
    section, key = parts
    if section not in Settings.model_fields:
        known = ", ".join(Settings.model_fields)
        raise ConfigError(f"unknown settings section '{section}' in {origin} (known: {known})")
    fields = Settings.model_fields[section].annotation.model_fields  # type: ignore[union-attr]
    if key not in fields:
        raise ConfigError(f"unknown setting '{section}.{key}' in {origin} (known: {', '.join(fields)})")
    tree.setdefault(section, {})[key] = value


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line from a YAML error: what is wrong and where (line and column, 1-based)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def _from_yaml(path: Path, tree: dict[str, Any]) -> None:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    for section, values in loaded.items():
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path}: section '{section}' must be a mapping")
        for key, value in values.items():
            _merge(tree, [str(section), str(key)], value, str(path))


def _from_env(env: dict[str, str], tree: dict[str, Any]) -> None:
    for name, raw in sorted(env.items()):
        if name.startswith(ENV_PREFIX):
            parts = name[len(ENV_PREFIX) :].lower().split("__")
            if len(parts) != 2:
                raise ConfigError(f"environment variable {name} must be RECSYS__SECTION__KEY")
            try:
                value = yaml.safe_load(raw) if raw else ""
            except yaml.YAMLError as exc:
                problem = _yaml_problem(exc)
                raise ConfigError(f"environment variable {name}: not valid YAML ({problem})") from None
            _merge(tree, parts, value, f"environment ({name})")
    if env.get("MLFLOW_TRACKING_URI"):
        tree.setdefault("mlflow", {})["tracking_uri"] = env["MLFLOW_TRACKING_URI"]
    if env.get("REDIS_CONNECTION_STRING"):
        tree.setdefault("store", {})["connection_string"] = env["REDIS_CONNECTION_STRING"]


def load_settings(
    overrides: list[str] | tuple[str, ...] = (),
    config_file: str | Path | None = None,
    env: dict[str, str] | None = None,
) -> Settings:
    """Resolve the settings; raises ConfigError naming the first bad key or value."""
    env = dict(os.environ) if env is None else env
    tree: dict[str, Any] = {}
    config_file = config_file or env.get("RECSYS_CONFIG")
    if config_file:
        _from_yaml(Path(config_file), tree)
    _from_env(env, tree)
    for text in overrides:
        parts, value = parse_override(text)
        _merge(tree, parts, value, f"override '{text}'")
    if "home" not in tree.get("paths", {}) and env.get("RECSYS_HOME"):
        tree.setdefault("paths", {})["home"] = env["RECSYS_HOME"]
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        shown = "***" if where in SECRET_SETTINGS else repr(first.get("input"))
        raise ConfigError(f"invalid setting {where}: {first['msg']} (got {shown})") from None
