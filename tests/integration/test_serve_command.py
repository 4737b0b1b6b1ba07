"""`recsys serve` for real: a version registered in a tmp MLflow, a real Redis, uvicorn on a free port.

The small bundle and the synthetic lists of tests/integration/test_serving.py are registered as
``two_tower`` version 1 (alias champion) and published; ``recsys serve --model 1`` serves them. What
a client can get wrong (headers, body, JSON, columns, layouts) is an HTTP 4xx naming it, and what
an operator can get wrong (port, version) is one line and a non-zero exit before anything starts.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.online import feast_repo, writer
from recsys.ops import redis_server
from recsys.ops.registry import Registry
from recsys.serving.http import MAX_BODY_BYTES
from tests.integration.conftest import make_settings
from tests.integration.test_serving import (  # noqa: F401 - bundle_dir is a fixture
    N_MOVIES,
    OUTSIDE,
    STORED,
    UNKNOWN,
    bundle_dir,
    stored_histories,
    stored_recs,
    title,
)
from tests.ports import free_port

pytestmark = pytest.mark.integration
RECSYS = str(Path(sys.executable).parent / "recsys")


def _clean_env(env: dict[str, str]) -> dict[str, str]:
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RECSYS") and k not in ("MLFLOW_TRACKING_URI", "REDIS_CONNECTION_STRING")
    }
    return {**keep, **env}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RECSYS, *args], env=_clean_env(env), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, feature_repo_copy: Path, bundle_dir: Path):  # noqa: F811
    """(env, settings): version 1 of two_tower registered (champion), lists published, Redis up."""
    from recsys.tracking.two_tower import PYFUNC_ENTRY

    home = tmp_path_factory.mktemp("serve-home")
    port = free_port()
    env = {
        "RECSYS_HOME": str(home),
        "RECSYS__STORE__PORT": str(port),
        "RECSYS__PATHS__FEATURE_REPO": str(feature_repo_copy),
    }
    settings = make_settings(home, feature_repo_copy, port)
    with redis_server.running(settings):
        rng = np.random.default_rng(1)
        ids = [*range(1, N_MOVIES + 1), OUTSIDE]
        catalogue = pd.DataFrame({"movie_id": np.array(ids, dtype="int64"), "title": [title(m) for m in ids]})
        feast_repo.apply(settings)
        writer.publish(stored_recs(rng), catalogue, settings, stored_histories(rng))
        models = Registry.open(settings)
        with models.run():
            version = models.log_model(bundle_dir, PYFUNC_ENTRY, {}, {})
        models.promote(version)
        yield env, settings


@pytest.fixture(scope="module")
def server(registered) -> Iterator[int]:
    """`recsys serve --model 1` on a free port (one worker); its port."""
    env, _ = registered
    port = free_port()
    proc = subprocess.Popen(
        [RECSYS, "serve", "--model", "1", "--port", str(port), "--workers", "1"],
        env=_clean_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        from tests.integration.test_chain import _wait_for_server

        _wait_for_server(port, proc)
        yield port
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def post_declared(port: int, length: int, content_type: str) -> tuple[int, dict]:
    """Headers declaring a ``length``-byte body, and no body: the server must refuse on the declared
    length alone. (A client still sending a large body races the server's early answer and may see
    a broken pipe instead of the reply.)"""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("POST", "/invocations")
        conn.putheader("Content-Type", content_type)
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def post(port: int, body: bytes, content_type: str | None = "application/json") -> tuple[int, dict]:
    if len(body) > MAX_BODY_BYTES and content_type is not None:
        return post_declared(port, len(body), content_type)
    headers = {"Content-Type": content_type} if content_type is not None else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body, headers=headers)
    if content_type is None:  # urllib adds a form Content-Type to any POST without one
        request.add_unredirected_header("Content-Type", "")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"raw": raw.decode("utf-8", "replace")}


def split(columns: list[str], data: list[list]) -> bytes:
    return json.dumps({"dataframe_split": {"columns": columns, "data": data}}).encode()


def test_serve_takes_a_version_number_and_answers(server: int, registered) -> None:
    status, body = post(server, split(["user_id", "k"], [[STORED[1], 3], [UNKNOWN[0], 2]]))
    assert status == 200, body
    stored, unknown = body["predictions"]
    assert stored["source"] == "online_store" and len(stored["recommendations"]) == 3
    assert unknown["source"] == "popular" and len(unknown["recommendations"]) == 2


@pytest.mark.parametrize(
    "body, content_type, status, message",
    [
        (
            split(["user_id", "user_id"], [[1, 2]]),
            "application/json",
            400,
            "'user_id' appears more than once",
        ),
        (split(["user_id"], [[1]]), None, 400, "request needs a Content-Type header"),
        (split(["user_id"], [[1]]), "text/plain", 400, "Content-Type 'text/plain' is not supported"),
        (split(["user_id"], [[1]]), "application/json; charset=latin-1", 400, "only charset=utf-8"),
        (
            b'{"dataframe_split": {"columns": ["user_id"], "data": [[' + b"9" * 5000 + b"]]}}",
            "application/json",
            400,
            "a number of 5,000 digits",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "nested too deeply"),
        (b'{"dataframe_split": "\xff"}', "application/json", 400, "not UTF-8"),
        (
            b'{"dataframe_split": {"columns": ["user_id"], "data": [[1]',
            "application/json",
            400,
            "not valid JSON",
        ),
        (b"x" * (2 << 20), "application/json", 413, "request body is over 1,048,576 bytes"),
        (split(["user_id", "x" * 50_000], [[1, 2]]), "application/json", 400, "(50,000 characters)"),
    ],
)
def test_client_mistakes_are_a_4xx_naming_the_problem(
    server: int, body: bytes, content_type: str | None, status: int, message: str
) -> None:
    got, reply = post(server, body, content_type)
    assert got == status and message in reply.get("message", ""), (got, str(reply)[:500])
    text = json.dumps(reply)
    assert "stack_trace" not in reply and "Traceback" not in text and "Failed to predict data" not in text
    assert len(text) < 1000  # nothing the client sent is echoed at length


def test_the_inputs_and_instances_formats_are_answered(server: int) -> None:
    want = post(server, split(["user_id", "k"], [[STORED[1], 3], [UNKNOWN[0], 2]]))[1]["predictions"]
    for body in [
        {"inputs": {"user_id": [STORED[1], UNKNOWN[0]], "k": [3, 2]}},
        {"inputs": [{"user_id": STORED[1], "k": 3}, {"user_id": UNKNOWN[0], "k": 2}]},
        {"instances": [{"user_id": STORED[1], "k": 3}, {"user_id": UNKNOWN[0], "k": 2}]},
        {"dataframe_records": [{"user_id": STORED[1], "k": 3}, {"user_id": UNKNOWN[0], "k": 2}]},
    ]:
        status, reply = post(server, json.dumps(body).encode())
        assert status == 200 and reply["predictions"] == want, (body, reply)


def test_movie_requests_with_redis_down_are_a_503_not_a_500(server: int, registered) -> None:
    _, settings = registered
    try:
        assert redis_server.stop(settings)
        status, reply = post(server, split(["movie_id"], [[1]]))
        assert status == 503 and "unreachable" in reply["message"], reply
        status, reply = post(server, split(["user_id"], [[STORED[1]]]))
        assert status == 200 and reply["predictions"][0]["source"] == "popular"
    finally:
        redis_server.start(settings)


def test_serve_refuses_a_bad_port_or_version_in_one_line_before_starting(registered) -> None:
    env, _ = registered
    with socket.socket() as taken:
        port = free_port()
        taken.bind(("127.0.0.1", port))
        taken.listen()
        out = cli(env, "serve", "--port", str(port))
        assert out.returncode == 1 and "already in use" in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and out.stdout == ""
    for args, code, message in [
        (["--port", "70000"], 2, "port must be an integer in 1..65535, got '70000'"),
        (["--port", "0"], 2, "port must be an integer in 1..65535"),
        (["--model", "7"], 1, "has no version 7: its versions are 1"),
        (["--model", "nightly"], 1, "has no version or alias 'nightly'"),
    ]:
        out = cli(env, "serve", "--port", str(free_port()), *args)
        assert out.returncode == code and message in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_lookup_of_a_user_without_a_list_answers_as_http_does(server: int, registered) -> None:
    from tests.integration.test_serving import HISTORY_ONLY

    env, _ = registered
    for user, source in [(UNKNOWN[1], "popular"), (HISTORY_ONLY[0], "computed")]:
        out = cli(env, "lookup", "--user", str(user), "--k", "4", "--json")
        assert out.returncode == 0, out.stderr
        note = [line for line in out.stderr.splitlines() if line.startswith("note:")]
        assert len(note) == 1 and f"user {user} has no stored list; source {source}" in note[0]
        status, reply = post(server, split(["user_id", "k"], [[user, 4]]))
        row = reply["predictions"][0]
        assert row["source"] == source
        got = json.loads(out.stdout)
        assert [t[0] for t in got] == [t[0] for t in row["recommendations"]]
        assert [t[1] for t in got] == pytest.approx([t[1] for t in row["recommendations"]], abs=1e-5)
    assert "positive ratings in the training data" in cli(env, "lookup", "--user", str(UNKNOWN[1])).stderr


def test_models_lists_both_registered_models_and_refuses_an_unknown_name(registered) -> None:
    env, _ = registered
    out = cli(env, "models")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert list(listed) == ["two_tower", "movie_similar"]
    assert [r["version"] for r in listed["two_tower"]] == ["1"]
    assert set(listed["two_tower"][0]["aliases"]) == {"champion", "challenger"}
    assert listed["movie_similar"] == []
    assert json.loads(cli(env, "models", "--model", "two_tower").stdout) == {"two_tower": listed["two_tower"]}
    for name, message in [
        ("nope", "no registered model 'nope'"),
        ("movie_similar", "has no registered version"),
    ]:
        out = cli(env, "models", "--model", name)
        assert out.returncode == 1 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = cli(env, "promote", "999")
    assert out.returncode == 1 and "two_tower has no version 999: its versions are 1" in out.stderr


def test_status_says_what_similar_lists_are_served(registered) -> None:
    from tests.integration.test_similar_store import STAMP, similar_lists

    env, settings = registered
    out = cli(env, "status")
    assert out.returncode == 0 and "similar: no similar-movie lists in the store" in out.stdout, out.stderr
    writer.publish_similar(similar_lists(), settings)
    out = cli(env, "status")
    assert out.returncode == 0, out.stderr
    assert (
        f"similar: movie_similar version 2 ({N_MOVIES} movies), data version p1, scored "
        f"{STAMP.isoformat(timespec='seconds')}, {N_MOVIES} movies with a list (1 from their features "
        "alone: no or too few ratings)" in out.stdout
    )
    state = json.loads(cli(env, "status", "--json").stdout)
    assert state["similar"]["movies"] == N_MOVIES and state["similar"]["model_versions"] == {"2": N_MOVIES}
    assert state["similar"]["content"] == 1
    # a movie with no ratings: its list, and a note that it comes from its features alone
    out = cli(env, "similar", "--movie", str(N_MOVIES), "--k", "2", "--json")
    assert out.returncode == 0 and len(json.loads(out.stdout)) == 2, out.stderr
    assert f"note: movie {N_MOVIES} has no or too few ratings" in out.stderr
    assert "source content" in out.stderr
