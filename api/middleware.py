"""ASGI middleware: request ids, and a hard limit on request body size.

Both are plain ASGI (not Starlette's BaseHTTPMiddleware): no extra task per request, and the
request-id context variable set here is the one the endpoint and its log records see.

* ``RequestIdMiddleware`` takes ``X-Request-ID`` from the request when it is a sane token
  (1-128 visible ASCII characters) or makes one, sets ``gateway.logs.request_id`` for the
  request (HTTP and WebSocket) and echoes it on every HTTP response.
  An exception no handler took is answered here as a 500 problem (with the id) and logged.
* ``BodyLimitMiddleware`` answers 413 (problem+json) when a body is larger than the limit:
  at once from ``Content-Length``, or while reading a chunked body, before the app sees any of
  it. Bodies are small here (JSON commands), so buffering up to the limit is cheap.
"""

from __future__ import annotations

import logging
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiProblem, problem_for, problem_response
from gateway.logs import request_id

log = logging.getLogger(__name__)

_SANE_ID = re.compile(r"^[\x21-\x7e]{1,128}$")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        rid = incoming if incoming and _SANE_ID.match(incoming) else uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        try:
            if scope["type"] == "websocket":
                # Nothing to stamp on a WebSocket's messages: its sends (every telemetry frame)
                # go straight through, not through one more coroutine each.
                await self._call_websocket(scope, receive, send)
            else:
                await self._call_http(scope, receive, send, rid.encode())
        finally:
            request_id.reset(token)

    async def _call_websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception:
            log.exception("unhandled error in WebSocket %s", scope["path"])
            raise

    async def _call_http(self, scope: Scope, receive: Receive, send: Send, raw: bytes) -> None:
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [h for h in message.get("headers", []) if h[0] != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", raw)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # A bug: answered here (not by Starlette's outermost handler) so the 500 problem
            # still carries the request id, and logged once with it.
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if started:
                raise
            problem, _ = problem_for(exc)
            await problem_response(problem)(scope, receive, send_with_id)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body_bytes:
                await self._refuse(send)
                return
            chunks.append(body)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        problem, headers = problem_for(
            ApiProblem(
                413,
                f"the request body is larger than {self.max_body_bytes} bytes",
                kind="body-too-large",
            )
        )
        response = problem_response(problem, {**headers, "Connection": "close"})
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None
