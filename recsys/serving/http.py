"""The HTTP server of ``recsys serve``: MLflow's own scoring app (FastAPI) behind a small ASGI guard.

``mlflow models serve`` runs ``uvicorn mlflow.pyfunc.scoring_server.app:app``; ``recsys serve`` runs
``uvicorn --factory recsys.serving.http:create_app`` instead, with the same model folder
(environment ``__pyfunc_model_path__``), workers and timeout. Requests and answers are MLflow's; the
guard only refuses, before MLflow parses anything, what MLflow would answer with a 500, a 415 in
plain text or a stack trace:

- a body over :data:`MAX_BODY_BYTES`: HTTP 413;
- a missing Content-Type, or one other than application/json, text/csv or
  application/vnd.apache.parquet (charset utf-8 only): HTTP 400 naming it;
- JSON that is not UTF-8, not JSON, nested deeper than :data:`MAX_JSON_DEPTH` or holding a number
  of more than :data:`MAX_DIGITS` digits: HTTP 400 naming the problem.

Error answers (status >= 400) from MLflow lose their ``stack_trace`` and the "Failed to predict
data '<the whole request>'" preamble, so a message is the model's one line. Plain ``mlflow models
serve`` serves the same model and request formats without the guard.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from recsys.errors import InvalidRequestError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 1 << 20  # 1 MiB: 1,000 rows of [id, k] take about 30 KB in any layout
MAX_JSON_DEPTH = 32  # a request is 3-4 levels deep
MAX_DIGITS = 40  # an int64 id has at most 19 digits
CONTENT_TYPES = ("application/json", "text/csv", "application/vnd.apache.parquet")
MODEL_PATH_ENV = "__pyfunc_model_path__"  # mlflow.pyfunc.scoring_server._SERVER_MODEL_PATH
_PREAMBLE = re.compile(r"^Failed to predict data '.*?'\. \nError: ", re.DOTALL)


class TooLarge(Exception):
    """The request body is over MAX_BODY_BYTES."""


def check_content_type(header: str | None) -> str:
    """The media type of a Content-Type header; InvalidRequestError naming what is wrong."""
    if not header or not header.strip():
        raise InvalidRequestError(
            "request needs a Content-Type header: application/json (or text/csv, "
            "application/vnd.apache.parquet)"
        )
    media, *params = [part.strip() for part in header.split(";")]
    media = media.lower()
    if media not in CONTENT_TYPES:
        shown = header if len(header) <= 60 else header[:60] + "..."
        raise InvalidRequestError(
            f"Content-Type {shown!r} is not supported; send application/json (or text/csv, "
            "application/vnd.apache.parquet)"
        )
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() != "charset" or value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise InvalidRequestError(
                f"Content-Type parameter {param[:60]!r} is not supported; only charset=utf-8"
            )
    return media


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise InvalidRequestError(
            f"request holds a number of {len(text.lstrip('-')):,} digits; ids have at most 19"
        )
    return int(text)


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, level)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def check_json(body: bytes) -> None:
    """InvalidRequestError when ``body`` is not UTF-8 JSON a request can be: too deep, a number too long."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"request body is not UTF-8 (byte {exc.start})") from None
    try:
        parsed = json.loads(text, parse_int=_int)
    except RecursionError:
        raise InvalidRequestError(
            f"request JSON is nested too deeply (at most {MAX_JSON_DEPTH} levels)"
        ) from None
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"request is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except ValueError as exc:  # e.g. a float literal too long for the parser
        raise InvalidRequestError(f"request is not valid JSON: {str(exc)[:80]}") from None
    if _depth(parsed) > MAX_JSON_DEPTH:
        raise InvalidRequestError(f"request JSON is nested too deeply (at most {MAX_JSON_DEPTH} levels)")


def clean_error(body: bytes) -> bytes:
    """An MLflow error answer without ``stack_trace`` and without the echo of the request data."""
    try:
        reply = json.loads(body)
    except ValueError:
        return body
    if not isinstance(reply, dict):
        return body
    reply.pop("stack_trace", None)
    if isinstance(reply.get("message"), str):
        reply["message"] = _PREAMBLE.sub("", reply["message"], count=1)
    return json.dumps(reply).encode()


def _reply(status: int, message: str, code: str = "BAD_REQUEST") -> tuple[int, bytes]:
    return status, json.dumps({"error_code": code, "message": message}).encode()


async def _send(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class RequestGuard:
    """ASGI middleware in front of MLflow's scoring app (see the module docstring)."""

    def __init__(self, app: App, max_body: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_body = app, max_body

    def _refusal(self, headers: dict[bytes, bytes], body: bytes | None) -> tuple[int, bytes] | None:
        length = headers.get(b"content-length", b"0")
        if body is None or (length.isdigit() and int(length) > self.max_body):
            return _reply(413, f"request body is over {self.max_body:,} bytes", "REQUEST_LIMIT_EXCEEDED")
        try:
            media = check_content_type(headers.get(b"content-type", b"").decode("latin-1"))
            if media == "application/json":
                check_json(body)
        except InvalidRequestError as exc:
            return _reply(400, str(exc))
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/invocations" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope["headers"]}
        length = headers.get(b"content-length", b"0")
        body: bytes | None = None
        if not (length.isdigit() and int(length) > self.max_body):
            try:
                body = await _read_body(receive, self.max_body)
            except TooLarge:
                body = None
        refusal = self._refusal(headers, body)
        if refusal is not None:
            await _send(send, *refusal)
            return
        await self.app(scope, _replay(body or b""), _cleaning(send))


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _cleaning(send: Send) -> Send:
    """``send`` that rewrites error answers (status >= 400) with :func:`clean_error`."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start" and message["status"] >= 400:
            start = message
            return
        if start is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = clean_error(b"".join(chunks))
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped


def create_app() -> App:
    """MLflow's scoring app for the model folder in ``$__pyfunc_model_path__``, behind the guard
    (``uvicorn --factory``; each worker calls it once)."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_PATH_ENV])
    return RequestGuard(scoring_server.init(model))
