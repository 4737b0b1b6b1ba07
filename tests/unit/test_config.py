"""Settings: defaults, YAML, environment and command-line overrides; unknown keys are errors."""

import pytest

from recsys.config import load_settings, parse_override
from recsys.errors import ConfigError

pytestmark = pytest.mark.unit


def test_defaults_match_the_protocol():
    s = load_settings(env={})
    assert (s.data.rating_threshold, s.data.min_user_interactions, s.data.min_item_interactions) == (
        4.0,
        5,
        5,
    )
    assert s.model.embedding_dim == 64
    assert s.score.k == 100
    assert s.store.host == "127.0.0.1"
    assert s.tracking_uri.startswith("sqlite:///")
    assert s.mlflow.model_name == "two_tower" and s.mlflow.experiment == "two-tower"


def test_override_order_file_env_cli(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  temperature: 0.2\ntrain:\n  max_epochs: 3\n  seed: 1\n")
    env = {"RECSYS__TRAIN__MAX_EPOCHS": "5", "RECSYS__TRAIN__SEED": "9"}
    s = load_settings(["train.seed=7"], config_file=cfg, env=env)
    assert s.model.temperature == 0.2  # file
    assert s.train.max_epochs == 5  # env beats file
    assert s.train.seed == 7  # command line beats env


def test_seed_style_overrides():
    s = load_settings(["model.temperature=0.1", "train.max_epochs=7", "model.user_tower=mean"], env={})
    assert (s.model.temperature, s.train.max_epochs, s.model.user_tower) == (0.1, 7, "mean")
    assert s.flat()["train.max_epochs"] == 7


def test_standard_env_vars_win_for_services():
    s = load_settings(
        env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "REDIS_CONNECTION_STRING": "10.0.0.5:6379"}
    )
    assert s.tracking_uri == "http://127.0.0.1:5000"
    assert s.redis_connection == "10.0.0.5:6379"
    assert not s.uses_embedded_redis


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.temprature=0.1", "unknown setting 'model.temprature'"),
        ("modle.temperature=0.1", "unknown settings section 'modle'"),
        ("temperature=0.1", "not of the form"),
        ("model.temperature=-1", "invalid setting model.temperature"),
        ("model.user_tower=transformer", "invalid setting model.user_tower"),
        ("train.max_epochs=abc", "invalid setting train.max_epochs"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        load_settings([override], env={})


def test_bad_env_and_file(tmp_path):
    with pytest.raises(ConfigError, match="RECSYS__TRAIN__NOPE"):
        load_settings(env={"RECSYS__TRAIN__NOPE": "1"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=tmp_path / "missing.yaml", env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(config_file=bad, env={})


def test_parse_override_values_are_yaml():
    assert parse_override("train.progress_bar=false") == (["train", "progress_bar"], False)
    assert parse_override("score.k=50") == (["score", "k"], 50)


def test_secrets_never_reach_params_logs_or_artefacts():
    import json
    import re
    from pathlib import Path

    import yaml

    s = load_settings(
        env={
            "REDIS_CONNECTION_STRING": "redis.internal:6380,password=hunter2,db=1",
            "MLFLOW_TRACKING_URI": "https://ops:s3cr3t@mlflow.internal:5000",
        }
    )
    assert s.redis_connection.endswith("password=hunter2,db=1")  # clients get the real value
    assert s.tracking_uri == "https://ops:s3cr3t@mlflow.internal:5000"
    assert s.redis_address == "redis.internal:6380,password=***,db=1"  # messages get this
    assert s.tracking_address == "https://ops:***@mlflow.internal:5000"
    shown = [json.dumps(s.flat()), yaml.safe_dump(s.public()), repr(s), str(s), s.model_dump_json()]
    for text in shown:
        assert "hunter2" not in text and "s3cr3t" not in text
    assert s.flat()["store.connection_string"] == "redis.internal:6380,password=***,db=1"
    with pytest.raises(ConfigError) as bad:
        load_settings(["store.connection_string=[hunter2]"], env={})
    assert "hunter2" not in str(bad.value)
    # only recsys.config reads the secret fields; everything else goes through the accessors
    root = Path(__file__).resolve().parents[2]
    for path in [*root.glob("recsys/*.py"), *root.glob("dags/*.py"), *root.glob("benchmarks/*.py")]:
        if path.name != "config.py":
            assert not re.search(
                r"\.store\.connection_string\b|\.mlflow\.tracking_uri\b", path.read_text()
            ), path


@pytest.mark.parametrize(
    "text, message",
    [
        ("train:\n  max_epochs: [1, 2\n", "is not valid YAML: .* at line 3"),
        ("train: {max_epochs: 3\n", "is not valid YAML"),
        ("\ttrain:\n  max_epochs: 3\n", "is not valid YAML: .*line 1"),
    ],
)
def test_a_yaml_syntax_error_in_the_config_file_is_one_line(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as raised:
        load_settings(config_file=path, env={})
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(ConfigError, match="RECSYS__TRAIN__MAX_EPOCHS: not valid YAML"):
        load_settings(env={"RECSYS__TRAIN__MAX_EPOCHS": "[1, 2"})


def test_a_yaml_syntax_error_through_the_cli_is_one_line_and_exit_1(tmp_path, capsys):
    from recsys.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  max_epochs: [1, 2\n")
    assert main(["--config", str(path), "models"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "is not valid YAML" in err and "Traceback" not in err
