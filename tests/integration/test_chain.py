"""The whole chain on the bundled sample with real DVC, GX, MLflow, ONNX Runtime, Feast and Redis.

One module-scoped run of `recsys.pipelines.chain.run_all` (few epochs), then what a user sees: the lookup
command in a fresh process, Feast's own get_online_features, the registry's aliases, and what
happens when a later run fails validation (nothing served is touched) or does not beat the champion.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.config import PROJECT_ROOT, load_settings
from recsys.errors import ValidationFailed
from recsys.online import feast_repo
from recsys.online.reader import history, lookup, served_lookup
from recsys.ops import redis_server
from recsys.ops.registry import MOVIE_SIMILAR, ONLINE, Registry
from recsys.pipelines import evaluate, ingest, score_nightly
from recsys.pipelines.chain import run_all
from tests.ports import free_port

pytestmark = pytest.mark.integration
RECSYS = str(Path(sys.executable).parent / "recsys")
# Three epochs at a higher learning rate (tests/dags/conftest.FAST): the sasrec default then beats
# MostPop, as the gate requires;
# three epochs of the similar-movies tower already beat the two_tower vectors it starts from.
FAST = [
    "train.max_epochs=3",
    "train.learning_rate=0.01",
    "similar.max_epochs=3",
    "train.progress_bar=false",
    "score.verify_sample=50",
]


@pytest.fixture(scope="module")
def chain(tmp_path_factory, feature_repo_copy, port_factory):
    """Environment, settings and results of one full chain in a tmp home; Redis stopped after."""
    home = tmp_path_factory.mktemp("chain")
    env = {
        "RECSYS_HOME": str(home),
        "RECSYS__STORE__PORT": str(port_factory()),
        "RECSYS__PATHS__FEATURE_REPO": str(feature_repo_copy),
    }
    settings = load_settings(FAST, env=env)
    with redis_server.running(settings):
        yield env, settings, run_all(settings)


def champion(settings) -> str:
    return str(Registry.open(settings).resolve("champion").version)


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RECSYS") and k not in ("MLFLOW_TRACKING_URI", "REDIS_CONNECTION_STRING")
    }
    return subprocess.run([RECSYS, *args], env={**clean, **env}, capture_output=True, text=True, timeout=300)


def test_chain_registers_a_champion_and_publishes_every_user(chain):
    _, settings, steps = chain
    assert steps["prepare"]["n_users"] == 603 and steps["prepare"]["n_train"] == 40033
    assert steps["train"]["version"] == "1"
    assert steps["promote"]["promoted"] and steps["promote"]["reason"].startswith("first version")
    assert champion(settings) == "1"
    assert str(Registry.open(settings).resolve("challenger").version) == "1"
    assert Registry.open(settings).resolve("champion").tags["k"] == "100"  # K on the model version
    # every user with a rating gets a list (610), not only the 603 the model was trained on
    assert steps["publish"]["written"]["users"] == 610
    recs = pd.read_parquet(steps["score"]["recommendations"])
    assert len(recs) == 610 and recs["item_ids"].map(len).eq(100).all()
    assert (recs["data_version"] == steps["ingest"]["data_version"]).all()  # the raw snapshot's version
    assert set(recs["source"]) <= {"model", "popular"} and (recs["source"] == "model").sum() >= 603
    # MLflow run: params, per-epoch metrics, artefacts and the data version
    run = Registry.open(settings).client.get_run(steps["train"]["run_id"])
    assert run.data.params["model.embedding_dim"] == "64"
    assert run.data.tags["data_version"] == steps["prepare"]["data_version"] != ""
    assert run.data.tags["raw_data_version"] == steps["ingest"]["data_version"] != ""
    assert "mostpop_valid_ndcg_at_10" in run.data.metrics and "test_recall_at_100" in run.data.metrics
    history = Registry.open(settings).client.get_metric_history(run.info.run_id, "valid_ndcg_at_10")
    assert [m.step for m in history] == list(range(1, settings.train.max_epochs + 1))  # one per epoch
    names = {a.path for a in Registry.open(settings).client.list_artifacts(run.info.run_id, "training")}
    assert {"training/checkpoint.pt", "training/item_embeddings.npy", "training/config.yaml"} <= names
    # the training data is a dataset input, its DVC version the digest
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "ml-latest-small-train"
    assert dataset_input.dataset.digest == steps["prepare"]["data_version"][:36]
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"
    # the gate's evaluations and decision are on the run
    for name in ("gate_challenger_valid_ndcg_at_10", "gate_mostpop_valid_ndcg_at_10"):
        assert name in run.data.metrics
    assert run.data.metrics["gate_challenger_valid_ndcg_at_10"] == pytest.approx(
        steps["train"]["valid"]["ndcg_at_10"], abs=1e-6
    )
    assert run.data.tags["gate_decision"] == "promoted"
    assert run.data.tags["gate_data_version"] == steps["prepare"]["data_version"]
    assert {a.path for a in Registry.open(settings).client.list_artifacts(run.info.run_id, "plots")} == {
        "plots/loss.png",
        "plots/valid_metrics.png",
    }


def test_lookup_command_in_a_new_process(chain):
    env, settings, steps = chain
    out = cli(env, "lookup", "--user", "1", "--json")
    assert out.returncode == 0, out.stderr
    triples = json.loads(out.stdout)
    assert len(triples) == 10
    assert all(
        isinstance(m, int) and isinstance(s, float) and isinstance(t, str) and t for m, s, t in triples
    )
    assert [t[1] for t in triples] == sorted((t[1] for t in triples), reverse=True)
    recs = pd.read_parquet(steps["score"]["recommendations"]).set_index("user_id")
    assert [t[0] for t in triples] == recs.loc[1, "item_ids"][:10].tolist()
    # the plain form prints K triples, one per line
    plain = cli(env, "lookup", "--user", "1", "--k", "3")
    assert plain.returncode == 0 and len(plain.stdout.strip().splitlines()) == 3
    whole = cli(env, "lookup", "--user", "1", "--k", "100")  # the model version's K
    assert whole.returncode == 0 and len(whole.stdout.strip().splitlines()) == 100
    # --explain: [movie_id, score, title, because_title], the reason a movie the user liked
    explained = cli(env, "lookup", "--user", "1", "--explain", "--json")
    assert explained.returncode == 0, explained.stderr
    rows = json.loads(explained.stdout)
    assert [r[:3] for r in rows] == triples
    # tonight's catalogue: the content item tower reads the untrained movies of a history too
    titles = pd.read_csv(Path(steps["ingest"]["raw_dir"]) / "movies.csv").set_index("movieId")["title"]
    liked = {titles[m] for m in recs.loc[1, "history"] if m in titles.index}
    assert rows and all(r[3] in liked for r in rows), rows
    assert [r[3] for r in rows] == [titles[m] for m in recs.loc[1, "because_ids"][:10]]


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--user", "abc"], 2, "user_id must be an integer in 1..9223372036854775807, got 'abc'"),
        (["--user", "-4"], 2, "user_id must be an integer"),
        (["--user", "100000000000000000000000000000"], 2, "user_id must be an integer"),
        (["--user", "1", "--k", "0"], 2, "k must be an integer in 1..1000"),
        (["--user", "1", "--k", "1001"], 2, "k must be an integer in 1..1000"),
        (["--user", "1", "--k", "500"], 1, "k must be at most 100, the length of the list stored for user 1"),
    ],
)
def test_lookup_bad_input_one_line_error(chain, args, code, message):
    out = cli(chain[0], "lookup", *args)
    assert out.returncode == code
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert out.stdout == ""


def test_lookup_with_redis_down_is_one_line_and_a_non_zero_exit(chain):
    closed = free_port()  # nothing listens there
    out = cli({**chain[0], "REDIS_CONNECTION_STRING": f"127.0.0.1:{closed}"}, "lookup", "--user", "1")
    assert out.returncode == 1 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert f"127.0.0.1:{closed}" in out.stderr and "unreachable" in out.stderr


def test_feast_get_online_features_returns_the_same_list(chain):
    _, settings, _ = chain
    fs = feast_repo.feature_store(settings)
    got = fs.get_online_features(
        features=fs.get_feature_service("recommendations_v1"), entity_rows=[{"user_id": 1}]
    ).to_dict()
    triples = lookup(1, 100, settings)
    assert got["item_ids"][0] == [t[0] for t in triples]
    assert got["scores"][0] == pytest.approx([t[1] for t in triples], abs=1e-6)
    # the reasons, parallel to the list: movies the user liked
    because = [m for m, _ in served_lookup(1, 100, settings, explain=True).because]
    assert got["because_ids"][0] == because and len(because) == 100
    assert set(because) <= set(history(1, settings))


def test_the_similar_tower_starts_from_the_two_tower_champion_and_must_beat_its_vectors(chain, tmp_path):
    from recsys.runtime.similar import SimilarBundle
    from recsys.tracking.similar import TwoTowerVectors, similar_gate, two_tower_vectors

    _, settings, steps = chain
    trained, gate = steps["similar"]["train"], steps["similar"]["promote"]
    assert trained["init_from"] == "two_tower v1"
    assert gate["promoted"] and "two_tower v1's item vectors" in gate["reason"]
    assert gate["metrics"]["recall_at_10"] > gate["two_tower_metrics"]["recall_at_10"]
    assert gate["metrics"]["recall_at_10"] > gate["genre_metrics"]["recall_at_10"]
    similar = Registry.open(settings, MOVIE_SIMILAR)
    run = similar.client.get_run(trained["run_id"])
    assert run.data.tags["init_from"] == "two_tower v1" and run.data.metrics["init_coverage"] == 1.0
    assert run.data.metrics["two_tower_valid_recall_at_10"] == pytest.approx(
        gate["two_tower_metrics"]["recall_at_10"]
    )
    # the untrained start is epoch 0 of the validation curve
    history = similar.client.get_metric_history(run.info.run_id, "valid_recall_at_10")
    assert sorted(m.step for m in history)[:2] == [0, 1]
    # a version that does not beat the two_tower floor stays as it is; here the floor is an oracle:
    # one dimension per validation query, shared by the query and its positives
    version, folder = similar.download_bundle("champion")
    bundle = SimilarBundle.load(folder)
    table = pd.read_parquet(Path(steps["similar"]["pairs"]["pairs_dir"]) / "pairs.parquet")
    positives = table[(table["split"] == "valid") & (table["kind"] == "positive")]
    row = {m: i for i, m in enumerate(bundle.catalogue["movie_id"])}
    column = {q: j for j, q in enumerate(positives["movie_id_first"].unique())}
    oracle = np.zeros((len(row), len(column)), dtype=np.float32)
    for query, positive in zip(positives["movie_id_first"], positives["movie_id_second"]):
        oracle[[row[query], row[positive]], column[query]] = 1.0
    refused = similar_gate(similar, version, table, reference=TwoTowerVectors("1", oracle, 1.0))
    assert not refused["promoted"] and "does not beat two_tower v1's item vectors" in refused["reason"]
    assert str(similar.resolve("champion").version) == version
    # with no two_tower champion (an empty registry), training starts at random and says so
    empty = load_settings(env={"RECSYS_HOME": str(tmp_path / "empty")})
    assert two_tower_vectors(Registry.open(empty), bundle.catalogue) is None


def test_failed_validation_leaves_served_lists_and_champion(chain, tmp_path):
    _, settings, _ = chain
    before = lookup(1, 100, settings)
    bad = tmp_path / "bad"
    shutil.copytree(PROJECT_ROOT / "data" / "ml-latest-small", bad)
    ratings = pd.read_csv(bad / "ratings.csv")
    ratings.loc[5, "rating"] = 7.0
    ratings.to_csv(bad / "ratings.csv", index=False)
    corrupted = load_settings(
        [*FAST, f"data.source={bad}"],
        env={
            "RECSYS_HOME": str(settings.paths.home),
            "RECSYS__STORE__PORT": str(settings.store.port),
            "RECSYS__PATHS__FEATURE_REPO": str(settings.paths.feature_repo),
        },
    )
    raw = Path(chain[2]["ingest"]["raw_dir"])
    raw_before = (raw / "ratings.csv").read_bytes()
    with pytest.raises(ValidationFailed, match="rating"):
        run_all(corrupted)
    assert (raw / "ratings.csv").read_bytes() == raw_before  # the good snapshot stays
    assert lookup(1, 100, settings) == before
    assert champion(settings) == "1"
    assert [(v["version"], v["aliases"]) for v in Registry.open(settings).versions()] == [
        ("1", ["challenger", "champion"])
    ]


def test_a_worse_model_does_not_move_the_champion(chain):
    env, settings, steps = chain
    out = cli(env, "train", "train.max_epochs=1", "train.progress_bar=false", "train.learning_rate=0.0001")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["version"] == "2" and not result["promotion"]["promoted"]
    # compared like with like: the champion was re-scored on the same split by its own graph
    assert result["comparison"]["champion"] == "1"
    assert result["comparison"]["champion_metrics"]["ndcg_at_10"] == pytest.approx(
        chain[2]["train"]["valid"]["ndcg_at_10"], abs=1e-6
    )
    run = Registry.open(settings).client.get_run(result["run_id"])
    assert run.data.tags["gate_decision"] == "kept_champion"
    assert "gate_champion_valid_ndcg_at_10" in run.data.metrics
    assert champion(settings) == "1"
    assert str(Registry.open(settings).resolve("challenger").version) == "2"
    promoted = cli(env, "promote", "2")
    assert promoted.returncode == 0 and "replaced version 1" in promoted.stdout
    assert champion(settings) == "2"
    assert cli(env, "promote", "1").returncode == 0
    missing = cli(env, "promote", "42")
    assert missing.returncode == 1 and "two_tower has no version 42: its versions are 1, 2" in missing.stderr


def _post(port: int, rows: list[list[int]]) -> tuple[int, dict]:
    body = json.dumps({"dataframe_split": {"columns": ["user_id", "k"], "data": rows}}).encode()
    return _post_raw(port, body)


def _post_raw(port: int, body: bytes) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _wait_for_server(port: int, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError("server did not answer /ping in time")


def test_http_endpoint_answers_the_seed_request(chain, port_factory):
    import signal

    from recsys.online.reader import USER_FIELDS, entity_key

    env, settings, steps = chain
    port = port_factory()
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RECSYS") and k not in ("MLFLOW_TRACKING_URI", "REDIS_CONNECTION_STRING")
    }
    proc = subprocess.Popen(
        [RECSYS, "serve", "--port", str(port)],
        env={**clean, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for_server(port, proc)
        status, body = _post(port, [[1, 10]])
        assert status == 200, body
        row = body["predictions"][0]
        assert row["user_id"] == 1 and row["source"] == "online_store"
        assert [tuple(t) for t in row["recommendations"]] == [
            (m, pytest.approx(s, abs=1e-6), t) for m, s, t in lookup(1, 10, settings)
        ]
        assert row["because"] == [list(b) for b in served_lookup(1, 10, settings, explain=True).because]
        # a user whose stored list is gone but whose history is stored: scored on the spot
        key = entity_key("user_id", 3)
        stored = {m: s for m, s, _ in lookup(3, 100, settings)}
        kept = history(3, settings)
        conn = redis_server.client(settings.redis_connection)
        conn.hdel(key, *USER_FIELDS)
        status, body = _post(port, [[3, 100], [999999, 4]])
        assert status == 200, body
        computed, unknown = body["predictions"]
        assert computed["source"] == "computed" and len(computed["recommendations"]) == 100
        # a computed list is explained from the same stored history; a popular one is not
        assert all(why is not None and why[0] in kept for why in computed["because"])
        assert len(computed["because"]) == 100
        assert not {t[0] for t in computed["recommendations"]} & set(kept)
        # the on-the-spot path ranks the trained catalogue and reads the history's trained movies
        # only (it has no snapshot); the nightly one also tonight's untrained movies, so the two
        # agree only for a history of trained movies: user 3's holds untrained ones
        assert stored and len({t[0] for t in computed["recommendations"]}) == 100
        assert unknown["source"] == "popular" and len(unknown["recommendations"]) == 4
        assert unknown["because"] == [None] * 4
        # nothing stored at all: the popular list
        conn.delete(key)
        status, body = _post(port, [[3, 5]])
        assert body["predictions"][0]["source"] == "popular"
        # bad input: an HTTP 400 naming the problem, never a stack trace
        for rows, message in [
            ([[1, 0]], "k must be an integer in 1..100"),
            ([[1, 1000]], "k must be an integer in 1..100"),
            ([[10**29, 5]], "user_id must be an integer in 1..9223372036854775807"),
            ([[u, 1] for u in range(1, 1002)], "at most 1000 per request"),
            ([], "no rows"),
        ]:
            status, body = _post(port, rows)
            assert status == 400 and message in body.get("message", ""), (status, body)
            assert "stack_trace" not in body and "Traceback" not in json.dumps(body)
        status, body = _post_raw(port, b'{"dataframe_split": {"columns": ["user_id"], "data": [[1]')
        assert status == 400 and "stack_trace" not in body, body
        status, body = _post_raw(
            port,
            json.dumps(
                {"dataframe_split": {"columns": ["user_id", "colour"], "data": [[1, "red"]]}}
            ).encode(),
        )
        assert status == 400 and "unknown column(s) ['colour']" in body["message"], body
        assert "stack_trace" not in body
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_hard_negatives_come_from_the_champions_lists(chain):
    from recsys.data.prepared import load_prepared
    from recsys.runtime.scoring import score_users, user_inputs
    from recsys.runtime.two_tower import ModelBundle
    from recsys.tracking.two_tower import champion_hard_lists

    env, settings, steps = chain
    hard_settings = load_settings(
        [*FAST, "model.softmax=sampled", "train.hard_negative_ratio=0.5"],
        env={
            "RECSYS_HOME": str(settings.paths.home),
            "RECSYS__STORE__PORT": str(settings.store.port),
            "RECSYS__PATHS__FEATURE_REPO": str(settings.paths.feature_repo),
        },
    )
    prepared = load_prepared(Path(steps["prepare"]["prepared_dir"]))
    lists = champion_hard_lists(hard_settings, Registry.open(hard_settings), prepared)
    # positions 20..100 of the champion's list for each user, as the challenger's item indices
    assert lists.shape == (prepared.n_users, 80)
    # the champion scores user 1 from the train history with its own graph; its list from rank
    # 20 on, in the challenger's item index, never holds a train positive of the user
    bundle = ModelBundle.load(Registry.open(settings).download_bundle("champion")[1])
    train = prepared.split("train")
    ranked = score_users(bundle, user_inputs(train[train["user_id"] == 1], bundle), "1", "t")
    user_idx = int(prepared.users.set_index("user_id").loc[1, "user_idx"])
    expected = prepared.catalogue.set_index("movie_id").loc[ranked["item_ids"][0][20:], "item_idx"]
    assert lists[user_idx].tolist() == expected.tolist()
    assert not set(lists[user_idx]) & set(train.loc[train["user_id"] == 1, "item_idx"])
    out = cli(
        env,
        "train",
        "model.softmax=sampled",
        "train.hard_negative_ratio=0.5",
        "train.max_epochs=1",
        "train.progress_bar=false",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    run = Registry.open(settings).client.get_run(json.loads(out.stdout)["run_id"])
    assert run.data.tags["hard_negatives_from"] == "champion"
    assert run.data.params["train.hard_negative_ratio"] == "0.5"


def _served(settings) -> dict:
    """Every key of the online store with its value, byte for byte (a hash as a field -> bytes dict:
    DUMP would depend on the order Redis's incremental rehashing leaves the fields in)."""
    conn = redis_server.client(settings.redis_connection)
    read = {b"hash": conn.hgetall, b"set": conn.smembers, b"string": conn.get}
    return {key: read[conn.type(key)](key) for key in sorted(conn.scan_iter(count=1000))}


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else b"\x00\xffnot a real file" * 64)


def test_a_corrupted_file_stops_the_run_and_leaves_the_served_lists_byte_identical(chain, tmp_path):
    from recsys.errors import DataError

    env, settings, steps = chain
    before, user_1 = _served(settings), lookup(1, 100, settings)
    raw = Path(steps["ingest"]["raw_dir"])
    prepared = Path(ingest.locate_prepared(settings)["prepared_dir"])
    recs = Path(steps["score"]["recommendations"])
    bundle = Path(Registry.open(settings).download_bundle("champion")[1])
    prepared_before = {p.name: p.read_bytes() for p in prepared.iterdir() if p.is_file()}

    def raw_copy_with(name: str, how: str) -> str:
        copy = tmp_path / f"raw-{name}-{how}"
        shutil.copytree(raw, copy)
        _damage(copy / name, how)
        return str(copy)

    cases = [  # (file, damage, the run it stops, the words the error must hold)
        (
            "ratings.csv",
            "garbage",
            lambda: ingest.prepare(settings, raw_copy_with("ratings.csv", "garbage")),
            "ratings.csv",
        ),
        (
            "movies.csv",
            "garbage",
            lambda: ingest.prepare(settings, raw_copy_with("movies.csv", "garbage")),
            "movies.csv",
        ),
        (
            "activity.parquet",
            "truncate",
            lambda: score_nightly.score(settings, full=True),  # a night without events reads neither
            "activity.parquet is not a readable parquet file",
        ),
        (
            "user_tower.onnx",
            "garbage",
            lambda: score_nightly.score(settings, full=True),
            "cannot load the ONNX graph",
        ),
        (
            "recommendations.parquet",
            "truncate",
            lambda: score_nightly.validate_recommendations(settings, str(recs)),
            "recommendations.parquet is not a readable parquet file",
        ),
        (
            "recommendations.parquet",
            "garbage",
            lambda: score_nightly.publish(settings, str(recs)),
            "recommendations.parquet is not a readable parquet file",
        ),
    ]
    where = {"activity.parquet": prepared, "user_tower.onnx": bundle, "recommendations.parquet": recs.parent}
    for name, how, run, words in cases:
        target = where[name] / name if name in where else None
        saved = target.read_bytes() if target else None
        try:
            if target:
                _damage(target, how)
            with pytest.raises(DataError, match=words) as failed:
                run()
            assert "\n" not in str(failed.value) and (name in str(failed.value)), str(failed.value)
        finally:
            if target:
                target.write_bytes(saved)
        assert _served(settings) == before, name  # nothing served changed, byte for byte
    assert lookup(1, 100, settings) == user_1
    assert {p.name: p.read_bytes() for p in prepared.iterdir() if p.is_file()} == prepared_before
    # from the command line: one line, exit 1
    saved = recs.read_bytes()
    _damage(recs, "truncate")
    try:
        out = cli(env, "publish", "--recommendations", str(recs))
    finally:
        recs.write_bytes(saved)
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "recommendations.parquet is not a readable parquet file" in out.stderr
    assert _served(settings) == before


def test_a_full_disk_under_the_scores_folder_stops_scoring_and_keeps_the_old_files(chain, monkeypatch):
    import errno

    from recsys.errors import DataError

    _, settings, steps = chain
    before, recs = _served(settings), Path(steps["score"]["recommendations"])
    files_before = {p.name: p.read_bytes() for p in recs.parent.iterdir()}
    written = []

    def full_disk(self, path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        Path(path).write_bytes(b"PAR1 half a file")  # what a full disk leaves behind
        written.append(path)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full_disk)
    with pytest.raises(DataError, match="No space left on device.*free space there") as failed:
        score_nightly.score(settings)
    monkeypatch.undo()
    assert written and "\n" not in str(failed.value)
    assert {p.name: p.read_bytes() for p in recs.parent.iterdir()} == files_before  # no temp left
    assert _served(settings) == before


def same_up_to_ties(a: pd.Series, b: pd.Series, user: int) -> None:
    """Two stored lists are the same up to the order of movies whose scores tie within float noise
    (the content tower's untrained movies sit in near-ties; a batch's padding cut moves a score by
    about 1e-7): each differing position ties within 1e-5 with a neighbour."""
    scores = np.asarray(b["scores"])
    for i in np.flatnonzero(np.asarray(a["item_ids"]) != np.asarray(b["item_ids"])):
        near = [j for j in (i - 1, i + 1) if 0 <= j < len(scores) and abs(scores[j] - scores[i]) < 1e-5]
        assert near, (user, i)


def test_a_night_of_events_rescores_only_its_users_and_equals_a_full_rescore(chain, tmp_path):
    """Runs last: it adds a night of events to the chain's snapshot. The incremental night's lists
    equal a full re-score's for every user; only the users in the events are written."""
    from recsys.online.reader import lookup_many

    env, settings, steps = chain
    lists = pd.read_parquet(steps["score"]["recommendations"]).set_index("user_id")
    last = int(pd.read_csv(PROJECT_ROOT / "data" / "ml-latest-small" / "ratings.csv")["timestamp"].max())
    top = [int(m) for m in lists.loc[1, "item_ids"][:2]]
    rows = [(1, m, 5.0, last + i) for i, m in enumerate(top)]  # user 1 rates its top two
    rows += [(100_000, m, 4.5, last + 10 + i) for i, m in enumerate([1, 260, 2571])]  # a new user
    rows += [(2, 318, 1.0, last + 20)]  # user 2 re-rates The Shawshank Redemption
    (tmp_path / "events").mkdir()
    columns = ["userId", "movieId", "rating", "timestamp"]
    pd.DataFrame(rows, columns=columns).to_csv(tmp_path / "events" / "2018-09-25.csv", index=False)
    untouched = lookup(42, 100, settings)

    taken = ingest.ingest_events(settings, str(tmp_path / "events"))
    evaluated = evaluate.evaluate_served(settings, "2018-09-25")  # the chain's lists on these events
    night = score_nightly.score(settings)
    score_nightly.validate_recommendations(settings, night["recommendations"])
    published = score_nightly.publish(settings, night["recommendations"])

    assert taken["counts"]["users"] == 3
    assert night["mode"] == "incremental" and night["rescored_users"] == [1, 2, 100_000]
    assert night["n_users"] == 611 and night["data_version"] == taken["data_version"]
    assert published["written"]["users"] == 3 and published["written"]["stale_users_removed"] == 0
    assert not {m for m, _, _ in lookup(1, 100, settings)} & set(top)
    assert lookup(42, 100, settings) == untouched
    # user 1's two positives were its top two; user 2's re-rating is no positive; the new user has no list
    assert evaluated["users"] == 1 and evaluated["positives"] == 2 and evaluated["users_without_list"] == 1
    assert evaluated["hit_rate_at_10"] == evaluated["recall_at_10"] == evaluated["ndcg_at_10"] == 1.0
    assert evaluated["nights"] == "1-1" and evaluated["model_version"] == "1"
    online = Registry.open(settings, ONLINE).client.get_run(evaluated["mlflow_run_id"])
    assert online.data.metrics["hit_rate_at_10"] == 1.0 and online.data.tags["nights"] == "1-1"
    report = cli(env, "report", "--nights", "3", "--png", str(tmp_path / "report.png"))
    assert report.returncode == 0 and "2018-09-25" in report.stdout and (tmp_path / "report.png").is_file()
    # strict JSON: the first night's churn (no lists before) is null, not NaN
    (first,) = json.loads(cli(env, "report", "--json").stdout, parse_constant=pytest.fail)["nights"]
    assert first["night"] == "2018-09-25" and first["churn_at_10"] is None
    status = cli(env, "status")
    assert "night:   incremental, 3 users re-scored, the oldest list served was scored" in status.stdout
    incremental = pd.read_parquet(night["recommendations"]).set_index("user_id")
    # a quiet day: nothing new in the source, nobody re-scored, nothing to validate, lists unchanged
    assert not ingest.ingest_events(settings, str(tmp_path / "events"))["taken"]
    quiet = score_nightly.score(settings)
    assert quiet["mode"] == "incremental" and quiet["n_rescored"] == 0 and quiet["n_users"] == 611
    assert score_nightly.validate_recommendations(settings, quiet["recommendations"])["rows"] == 0
    assert score_nightly.publish(settings, quiet["recommendations"])["written"]["users"] == 0
    assert (
        lookup(42, 100, settings) == untouched
        and lookup(1, 100, settings)[0][0] == incremental.loc[1, "item_ids"][0]
    )
    full = score_nightly.score(settings, full=True)
    assert full["mode"] == "full" and full["reason"] == "a full re-score was asked for"
    everyone = pd.read_parquet(full["recommendations"]).set_index("user_id")
    assert incremental.index.tolist() == everyone.index.tolist()
    for user in everyone.index:
        np.testing.assert_allclose(incremental.loc[user, "scores"], everyone.loc[user, "scores"], atol=1e-5)
        same_up_to_ties(incremental.loc[user], everyone.loc[user], user)
    users = [u for u in everyone.index if u != 3]  # the HTTP test deleted user 3's stored list
    served = lookup_many(users, 100, settings)
    assert all([m for m, _, _ in served[u]] == everyone.loc[u, "item_ids"].tolist() for u in users)


def test_a_blocked_movie_leaves_the_served_lists_at_once_and_the_next_nights_lists(chain):
    """Runs after the nights above: a takedown holds for every reader before any re-publish, the
    nightly check of the fast lookup path expects it, and the next full night scores around it."""
    from recsys.online import blocklist

    env, settings, _ = chain
    before = lookup(1, 100, settings)
    movie = before[0][0]
    served_now = score_nightly.score(settings)["recommendations"]  # nobody to re-score: as served
    blocklist.block(movie, settings, reason="licence ended")
    try:
        assert [m for m, _, _ in lookup(1, 10, settings)] == [m for m, _, _ in before[1:11]]
        assert score_nightly.verify_lookups(settings, served_now)["checked"] == 20
        out = cli(env, "lookup", "--user", "1", "--json")
        assert out.returncode == 0 and movie not in [t[0] for t in json.loads(out.stdout)]
        night = score_nightly.score(settings, full=True)
        lists = pd.read_parquet(night["recommendations"])
        assert not any(movie in items for items in lists["item_ids"])
        assert lists["item_ids"].map(len).min() == 100  # full lists: the next movie took its place
        score_nightly.publish(settings, night["recommendations"])
        assert score_nightly.verify_lookups(settings, night["recommendations"])["k"] == 100
        assert len(lookup(1, 100, settings)) == 100
    finally:
        blocklist.unblock(movie, settings)
    # the stored lists were scored without it: the next night re-scores everyone to put it back
    back = score_nightly.score(settings)
    assert (
        back["mode"] == "full"
        and back["reason"] == f"movie(s) {movie} were unblocked since the lists were scored"
    )
    score_nightly.publish(settings, back["recommendations"])
    assert lookup(1, 10, settings) == before[:10]


class Done:
    """What a command run in this process returned and printed (subprocess.CompletedProcess's names)."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def in_process(monkeypatch, capsys, env: dict):  # noqa: ANN201 - a command runner
    """``cli`` for many short commands: `recsys.cli.main` in this process (the same door, exit codes
    and output) without a Python start-up and its imports per command."""
    from recsys.cli import main

    for name in ("MLFLOW_TRACKING_URI", "REDIS_CONNECTION_STRING"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def run(_env: dict, *args: str) -> Done:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return Done(code, out.out, out.err)

    return run


def test_a_canary_serves_its_slice_from_the_next_night_and_leaves_every_answer_when_stopped(
    chain, tmp_path, monkeypatch, capsys
):
    """Runs last: version 2 (the worse model above) as a canary on a quarter of the users. The
    next night re-scores exactly its slice with it, every reader says which arm and version a list
    comes from, and stopping it withdraws its lists at once; the night after gives them back to the
    champion."""
    from recsys.errors import UnknownUserError
    from recsys.online.reader import served_lookup
    from recsys.runtime.arms import Arms
    from recsys.serving.models import RecommenderModel

    env, settings, _ = chain
    cli = in_process(monkeypatch, capsys, env)
    for args, message in [
        (["--version", "2", "--share", "0.7"], "canary share must be in (0, 0.5], got 0.7"),
        (["--version", "1", "--share", "0.1"], "version 1 is the champion: a canary must be another version"),
        (["--version", "42", "--share", "0.1"], "two_tower has no version 42: its versions are 1, 2"),
    ]:
        out = cli(env, "canary", "start", *args)
        assert out.returncode == 1 and out.stderr.startswith(f"error: {message}"), out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    quiet = score_nightly.score(settings)  # nothing changed since the last night: nobody re-scored
    assert quiet["n_rescored"] == 0
    out = cli(env, "canary", "start", "--version", "2", "--share", "0.25", "--salt", "s1", "--by", "ann")
    assert out.returncode == 0 and "canary: version 2 for 25.0% of users (salt s1)" in out.stdout, out.stderr
    tags = Registry.open(settings).resolve("canary").tags
    assert (tags["canary_share"], tags["canary_salt"], tags["canary_started_by"]) == ("0.25", "s1", "ann")
    for args, message in [  # hostile or over-long text: refused in one line, the canary unchanged
        (["stop", "--reason", "x" * 201], "reason must be at most 200 characters, got 201"),
        (["start", "--version", "2", "--share", "0.3", "--salt", "s" * 201], "salt must be at most 200"),
        (["start", "--version", "2", "--share", "0.3", "--by", "b" * 201], "by must be at most 200"),
    ]:
        out = cli(env, "canary", *args)
        assert out.returncode == 1 and out.stderr.startswith(f"error: {message}"), out.stderr
    assert Registry.open(settings).resolve("canary").tags["canary_share"] == "0.25"
    assert cli(env, "canary", "start", "--version", "x", "--share", "0.1").returncode == 2  # usage
    users = pd.read_parquet(quiet["recommendations"])["user_id"].to_numpy()
    in_slice = set(users[Arms("1", "2", 0.25, "s1").in_canary(users)].tolist())
    assert 0.15 < len(in_slice) / len(users) < 0.35

    night = score_nightly.score(settings)
    assert night["mode"] == "incremental" and set(night["rescored_users"]) == in_slice, night["reason"]
    assert "the users whose arm changed (no canary -> canary 2 on 25%)" in night["reason"]
    lists = pd.read_parquet(night["recommendations"]).set_index("user_id")
    canary_rows = lists.index.isin(list(in_slice))
    assert (lists["arm"] == "canary").tolist() == canary_rows.tolist()
    assert set(lists.loc[canary_rows, "model_version"]) == {"2"}
    assert set(lists.loc[~canary_rows, "model_version"]) == {"1"}
    full = pd.read_parquet(score_nightly.score(settings, full=True)["recommendations"]).set_index("user_id")
    for user in full.index:  # the incremental night equals a full one under the same arms
        same_up_to_ties(lists.loc[user], full.loc[user], user)
    score_nightly.validate_recommendations(settings, night["recommendations"])
    score_nightly.publish(settings, night["recommendations"])
    assert score_nightly.verify_lookups(settings, night["recommendations"])["checked"] == 20

    assert "arms:    champion version 1, canary version 2 on 25.0% of users" in cli(env, "status").stdout
    user, other = min(in_slice), min(set(users.tolist()) - in_slice)
    assert served_lookup(user, 10, settings)[1:3] == ("canary", "2")
    assert served_lookup(other, 10, settings)[1:3] == ("champion", "1")
    out = cli(env, "lookup", "--user", str(user))
    assert out.returncode == 0 and f"served: user {user}, arm canary, two_tower version 2" in out.stderr
    store = feast_repo.feature_store(settings)
    features = ["user_recommendations:arm", "user_recommendations:model_version"]
    rows = [{"user_id": user}, {"user_id": other}]
    got = store.get_online_features(features=features, entity_rows=rows).to_dict()
    assert got["arm"] == ["canary", "champion"] and got["model_version"] == ["2", "1"]
    http = RecommenderModel()
    http.load(str(Registry.open(settings).download_bundle("champion")[1]), settings)
    rows = http.predict(None, pd.DataFrame({"user_id": [user, other], "k": [5, 5]}))
    assert [(r["source"], r["arm"], r["model_version"]) for r in rows] == [
        ("online_store", "canary", "2"),
        ("online_store", "champion", "1"),
    ]

    # a night of events: two canary users, one of whom rates its list's top movie, and two champion
    # users who both do; the evaluation measures each arm and the canary's difference
    hit, miss = sorted(in_slice)[:2]
    chosen = sorted(set(users.tolist()) - in_slice)[:2]
    last = int(pd.read_csv(PROJECT_ROOT / "data" / "ml-latest-small" / "ratings.csv")["timestamp"].max())
    top = {u: int(lists.loc[u, "item_ids"][0]) for u in (hit, *chosen)}
    unseen = next(int(m) for m in full.loc[miss, "item_ids"][50:] if m not in full.loc[miss, "item_ids"][:10])
    rows = [(u, top[u], 5.0, last + 100 + i) for i, u in enumerate((hit, *chosen))] + [
        (miss, unseen, 5.0, last + 200)
    ]
    (tmp_path / "canary-events").mkdir()
    frame = pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"])
    frame.to_csv(tmp_path / "canary-events" / "2018-10-01.csv", index=False)
    assert ingest.ingest_events(settings, str(tmp_path / "canary-events"))["counts"]["users"] == 4
    evaluated = evaluate.evaluate_served(settings, "2018-10-01")
    assert evaluated["arm"] == "all" and evaluated["users"] == 4 and evaluated["model_version"] == "1+canary2"
    champion_row, canary_row = evaluated["arms"]["champion"], evaluated["arms"]["canary"]
    assert (champion_row["users"], champion_row["hit_rate_at_10"]) == (2, 1.0)
    assert (canary_row["users"], canary_row["hit_rate_at_10"], canary_row["model_version"]) == (2, 0.5, "2")
    assert canary_row["hit_rate_at_10_diff"] == -0.5 and canary_row["evidence_nights"] == 1
    assert canary_row["hit_rate_at_10_diff_low"] <= -0.5 <= canary_row["hit_rate_at_10_diff_high"]
    version_2 = Registry.open(settings).resolve("2")
    assert version_2.tags["canary_evidence_nights"] == "1"
    assert version_2.tags["canary_hit_rate_at_10_diff"].startswith("-0.5000 [")
    history = Registry.open(settings).client.get_metric_history(
        version_2.run_id, "canary_hit_rate_at_10_diff"
    )
    assert [m.value for m in history] == [-0.5]
    report = cli(env, "report", "--nights", "1")
    assert "canary 2 on 2018-10-01: HitRate@10 -0.5000 [95% " in report.stdout, report.stdout
    assert "over 1 night(s), 2 canary and 2 champion users" in report.stdout

    out = cli(env, "canary", "stop", "--reason", "worse on HitRate@10", "--by", "ann")
    assert out.returncode == 0 and "version 2 is no longer the canary" in out.stdout
    with pytest.raises(UnknownUserError):  # withdrawn at once, with no re-publish
        served_lookup(user, 10, settings)
    assert served_lookup(other, 10, settings)[1:3] == ("champion", "1")
    assert http.predict(None, pd.DataFrame({"user_id": [user]}))[0]["source"] == "computed"
    out = cli(env, "lookup", "--user", str(user))
    assert out.returncode == 0 and "source computed" in out.stderr and "version 1" in out.stderr
    assert Registry.open(settings).resolve("2").tags["canary_stop_reason"] == "worse on HitRate@10"
    assert "no canary" in cli(env, "canary", "status").stdout
    assert "arms:    champion version 1, no canary; version 2 withdrawn" in cli(env, "status").stdout

    after = score_nightly.score(settings)  # the slice goes back to the champion; the events' users too
    assert after["mode"] == "incremental" and set(after["rescored_users"]) == in_slice | set(chosen)
    score_nightly.publish(settings, after["recommendations"])
    assert served_lookup(user, 10, settings)[1:3] == ("champion", "1")
    assert served_lookup(user, 10, settings).triples == lookup(user, 10, settings)

    # a manual promotion overrides the canary's online decision, and says so
    assert cli(env, "canary", "start", "--version", "2", "--share", "0.1").returncode == 0
    out = cli(env, "promote", "2")
    assert (
        out.returncode == 0
        and "this manual promotion overrides the online decision on canary version 2" in out.stdout
    )
    models = Registry.open(settings)
    assert models.champion_version() == "2" and models.alias_version("canary") is None
    assert models.resolve("2").tags["canary_decision"] == "overridden"
    assert "canary:  version 2 overridden" in cli(env, "status").stdout
    assert cli(env, "promote", "1").returncode == 0
