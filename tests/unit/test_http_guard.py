"""recsys.serving.http's guard, without a server: what it refuses, and what it leaves to MLflow."""

from __future__ import annotations

import asyncio
import json

import pytest

from recsys.errors import InvalidRequestError
from recsys.serving import http

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "header, message",
    [
        (None, "needs a Content-Type header"),
        ("", "needs a Content-Type header"),
        ("text/plain", "'text/plain' is not supported"),
        ("application/json; charset=latin-1", "only charset=utf-8"),
        ("application/json; boundary=x", "only charset=utf-8"),
    ],
)
def test_a_missing_or_wrong_content_type_is_named(header: str | None, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        http.check_content_type(header)


def test_the_content_types_mlflow_reads_pass() -> None:
    assert http.check_content_type("Application/JSON; charset=UTF-8") == "application/json"
    assert http.check_content_type("text/csv") == "text/csv"


@pytest.mark.parametrize(
    "body, message",
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"[" * 40 + b"]" * 40, "nested too deeply"),
        (b'{"a": [' + b"7" * 5000 + b"]}", "a number of 5,000 digits"),
        (b'{"a": ', "not valid JSON: Expecting value at line 1, column 7"),
        (b'{"a": "\xff"}', "not UTF-8 \\(byte 7\\)"),
    ],
)
def test_json_that_would_crash_the_parser_is_named(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        http.check_json(body)


def test_an_ordinary_request_passes() -> None:
    http.check_json(json.dumps({"dataframe_split": {"columns": ["user_id"], "data": [[2**63 - 1]]}}).encode())


def test_error_answers_lose_the_stack_trace_and_the_echo_of_the_request() -> None:
    reply = {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": "Failed to predict data '   user_id\n0  {'a': 1}'. \nError: row 0: user_id must be ...",
        "stack_trace": "Traceback ...",
    }
    assert json.loads(http.clean_error(json.dumps(reply).encode())) == {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": "row 0: user_id must be ...",
    }
    assert (
        http.clean_error(b"Request processing time exceeded limit")
        == b"Request processing time exceeded limit"
    )


def _call(guard: http.RequestGuard, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    scope = {"type": "http", "path": "/invocations", "method": "POST", "headers": headers}
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)] or [b""]
    messages = iter(
        [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    )
    sent: list[dict] = []

    async def receive() -> dict:
        return next(messages)

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(guard(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_the_guard_caps_the_body_and_passes_the_rest_on_unchanged() -> None:
    seen: list[bytes] = []

    async def app(scope, receive, send) -> None:  # noqa: ANN001 - an ASGI app
        seen.append((await receive())["body"])
        body = json.dumps({"message": "Failed to predict data 'x'. \nError: bad k", "stack_trace": "T"})
        await send({"type": "http.response.start", "status": 400, "headers": [(b"content-length", b"1")]})
        await send({"type": "http.response.body", "body": body.encode()})

    guard = http.RequestGuard(app, max_body=5000)
    json_type = [(b"content-type", b"application/json")]
    status, body = _call(guard, b'{"a": "' + b"x" * 6000 + b'"}', json_type)  # no Content-Length
    assert status == 413 and b"over 5,000 bytes" in body and seen == []
    status, body = _call(guard, b"{}", [*json_type, (b"content-length", b"99999")])
    assert status == 413 and seen == []
    request = b'{"inputs": {"user_id": [1]}}' + b" " * 3000
    status, body = _call(guard, request, json_type)
    assert seen == [request] and status == 400 and json.loads(body) == {"message": "bad k"}
