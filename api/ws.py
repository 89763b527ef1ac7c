"""The WebSocket endpoint /api/v1/ws: authenticate, subscribe, receive live data, send commands.

The protocol is specified in docs/websocket.md. In short: authenticate (an ``auth`` message
first, or at the handshake with ``Authorization: Bearer`` or the subprotocols
``mcgw.v1, bearer.<token>``, or the hub's web page's cookie when the handshake's ``Origin`` is
the hub itself; never in the URL, which servers and proxies log), then
``subscribe`` to a device or a session (optionally ``from_seq``, ``rate_hz``), and send
``stop``/``pause``/``resume``/``set_level``; every message with an ``id`` gets an ``ack`` or an
``error`` with that id.

Authorization is per message, not per connection: every message is handled for the user the
access policy (``gateway.access``) knows now, the same policy REST asks; a revoked token closes
the connection with 4401 within the policy's reload (at once for a revocation through this hub,
within about 1 s for one made elsewhere). Every frame and event is checked on its way out
(``api.live``). Connections are limited per token and per hub (``api.ws_max_per_token``,
``api.ws_max_connections``): 4429 and 1013.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from api.auth import Principal, authenticate, cookie_token, same_origin
from api.errors import ApiProblem, problem_for, unauthorized, validation_errors
from api.live import (
    CLOSE_UNAUTHENTICATED,
    MAX_SUBSCRIPTIONS,
    Connection,
    LiveSubscription,
    error_message,
    event_filter,
)
from api.metrics import ApiMetrics
from api.routes.devices import find_device
from api.routes.sessions import control_target, from_live, stop_visible, visible_live
from api.ws_messages import (
    CLIENT_MESSAGE,
    Auth,
    Control,
    Ping,
    Pong,
    SetLevel,
    Subscribe,
    Unsubscribe,
)
from gateway.config import ApiSettings
from gateway.runtime import Runtime

log = logging.getLogger(__name__)

router = APIRouter()

SUBPROTOCOL = "mcgw.v1"
BEARER_SUBPROTOCOL_PREFIX = "bearer."
AUTH_TIMEOUT_S = 10.0
AUTHENTICATING_SHARE = 8
"""At most 1/8 of the hub's connections (32 of 256) wait for authentication at once; one more
evicts the longest waiting, so clients that never authenticate cannot hold the slots phones
need (each for up to ``AUTH_TIMEOUT_S``)."""
DEFAULT_HEARTBEAT_S = 20.0
CLOSE_TOO_BIG = 1009
CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_TOO_MANY = 4429


def _handshake_token(websocket: WebSocket) -> tuple[str | None, str | None]:
    """(token, subprotocol to accept) from the Authorization header or the subprotocols."""
    offered = list(websocket.scope.get("subprotocols", []))
    chosen = SUBPROTOCOL if SUBPROTOCOL in offered else None
    header = websocket.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), chosen
    for protocol in offered:
        if protocol.startswith(BEARER_SUBPROTOCOL_PREFIX):
            return protocol[len(BEARER_SUBPROTOCOL_PREFIX) :], chosen
    # The web page's cookie, only from a page of this hub: a browser sends cookies with a
    # WebSocket handshake whatever page opens it, and the Origin is how to tell them apart.
    cookie = cookie_token(websocket)
    if cookie is not None and same_origin(websocket):
        return cookie, chosen
    return None, chosen


@router.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    app = websocket.app
    runtime: Runtime | None = getattr(app.state, "runtime", None)
    metrics: ApiMetrics = app.state.metrics
    token, subprotocol = _handshake_token(websocket)
    await websocket.accept(subprotocol=subprotocol)
    if runtime is None or not runtime.started:
        await websocket.close(CLOSE_TRY_AGAIN_LATER, "the gateway is starting or stopping")
        return
    connections: set[Connection] = app.state.connections
    limit = app.state.settings.api.ws_max_connections
    if len(connections) >= limit:
        await websocket.close(
            CLOSE_TRY_AGAIN_LATER, f"the hub has its maximum of {limit} WebSocket connections"
        )
        return
    waiting = [c for c in connections if c.token_id is None and not c.evicted]
    if len(waiting) >= max(1, limit // AUTHENTICATING_SHARE):
        # The newcomer gets in; the one that has waited longest without authenticating goes.
        min(waiting, key=lambda c: c.opened_at).evict(
            CLOSE_TRY_AGAIN_LATER, "too many connections are authenticating; authenticate at once"
        )
    connection = Connection(
        websocket, metrics=metrics, heartbeat_s=DEFAULT_HEARTBEAT_S, access=runtime.access
    )
    connections.add(connection)
    metrics.ws_connections.inc()
    try:
        await _serve(connection, runtime, token, app.state.settings.api)
    except WebSocketDisconnect:
        pass
    except asyncio.CancelledError:
        if not connection.aborted:
            raise
        # Our own abort of a stalled or silent client: end normally; the server drops the link.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
    finally:
        connections.discard(connection)
        metrics.ws_connections.dec()
        await connection.shutdown()


async def _authenticate(
    connection: Connection, runtime: Runtime, token: str | None, api: ApiSettings
) -> Principal | None:
    """The connection's user, after the per-token limit (4429) and before ``hello``."""
    checked = await _check_token(connection, runtime, token, api.max_body_bytes)
    if checked is None:
        return None
    principal, request_id = checked
    limit = api.ws_max_per_token
    connections: set[Connection] = connection.websocket.app.state.connections
    if sum(1 for c in connections if c.token_id == principal.token_id) >= limit:
        problem = ApiProblem(
            429,
            f"this token already has {limit} WebSocket connections open; close one (one "
            "connection can watch several devices)",
            kind="too-many-connections",
        )
        await connection.send(error_message(request_id, problem))
        await connection.close(CLOSE_TOO_MANY, "too many connections for this token")
        return None
    # Bound with no await since the count, so connections racing in together cannot all pass
    # it; from here on every access change reaches this connection.
    bound = connection.bind(principal)
    if bound is None:
        await _refuse_revoked(connection, request_id)
        return None
    if request_id is not None:
        await connection.send({"type": "ack", "id": request_id})
    await connection.send(
        {
            "type": "hello",
            "protocol": SUBPROTOCOL,
            "user_id": bound.user_id,
            "heartbeat_s": connection.heartbeat_s,
            "max_subscriptions": MAX_SUBSCRIPTIONS,
        }
    )
    connection.watch_plans(runtime.bus)  # after hello: it is always the first data message
    return bound


async def _check_token(
    connection: Connection, runtime: Runtime, token: str | None, max_bytes: int
) -> tuple[Principal, str | None] | None:
    """The token's user and the auth message's id (None for a handshake token), or None once
    the connection is refused and closing (no auth message in time, a bad or unknown token)."""
    request_id: str | None = None
    try:
        if token is None:
            async with asyncio.timeout(AUTH_TIMEOUT_S):
                raw = await _receive(connection, max_bytes)
            if raw is None:
                return None
            message = _auth_message(raw)
            request_id, token = message.id, message.token
            if message.heartbeat_s is not None:
                connection.heartbeat_s = message.heartbeat_s
        principal = await authenticate(runtime, token)
    except TimeoutError:
        await connection.close(CLOSE_UNAUTHENTICATED, "no auth message in time")
        return None
    except (ApiProblem, ValidationError, ValueError) as exc:
        # Not str(exc): a validation message would echo the input, and the input is a token.
        problem = (
            exc
            if isinstance(exc, ApiProblem)
            else ApiProblem(
                401,
                'the first message must be {"type": "auth", "token": "..."}',
                kind="unauthorized",
            )
        )
        await connection.send(error_message(request_id, problem))
        if problem.status == 503:  # storage could not check the token: it may well be good
            await connection.close(CLOSE_TRY_AGAIN_LATER, "the token cannot be checked now")
        else:
            await connection.close(CLOSE_UNAUTHENTICATED, "authentication failed")
        return None
    return principal, request_id


async def _refuse_revoked(connection: Connection, request_id: str | None) -> None:
    problem = unauthorized("this connection's token was revoked; pair again")
    await connection.send(error_message(request_id, problem))
    await connection.close(CLOSE_UNAUTHENTICATED, "token revoked")


def _auth_message(raw: Any) -> Auth:
    message = CLIENT_MESSAGE.validate_python(raw)
    if not isinstance(message, Auth):
        raise ApiProblem(
            401, 'the first message must be {"type": "auth", ...}', kind="unauthorized"
        )
    return message


async def _receive(connection: Connection, max_bytes: int) -> Any | None:
    """The next message as parsed JSON; None when the client closed. Raises on bad JSON."""
    message = await connection.websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    connection.last_received = asyncio.get_running_loop().time()
    data: str | bytes | None = message.get("text")
    if data is None:
        data = message.get("bytes") or b""
    if len(data) > max_bytes:
        await connection.close(CLOSE_TOO_BIG, f"messages are limited to {max_bytes} bytes")
        return None
    return orjson.loads(data)


async def _serve(
    connection: Connection, runtime: Runtime, token: str | None, api: ApiSettings
) -> None:
    max_bytes = api.max_body_bytes
    if await _authenticate(connection, runtime, token, api) is None:
        return
    connection.start_heartbeat()
    while True:
        request_id: str | None = None
        raw: Any = None
        try:
            raw = await _receive(connection, max_bytes)
            if raw is None:
                return
            if isinstance(raw, dict) and isinstance(raw.get("id"), str):
                request_id = raw["id"]
            user = connection.user
            if user is None:  # revoked between two messages: the close is on its way
                await _refuse_revoked(connection, request_id)
                return
            message = CLIENT_MESSAGE.validate_python(raw)
            request_id = message.id
            reply = await _dispatch(connection, runtime, user, message)
        except orjson.JSONDecodeError as exc:
            reply = error_message(None, ApiProblem(400, f"not JSON: {exc}", kind="bad-message"))
        except ValidationError as exc:
            problem = ApiProblem(
                422,
                "the message does not match the protocol; see errors",
                kind="validation",
                errors=validation_errors(_without_tag(exc.errors(), raw)),
            )
            reply = error_message(request_id, problem)
        except (WebSocketDisconnect, asyncio.CancelledError):
            raise
        except Exception as exc:  # every other failure is answered, and the connection lives on
            if not isinstance(exc, ApiProblem) and problem_for(exc)[0].status >= 500:
                log.exception("WebSocket command failed")
            reply = error_message(request_id, exc)
        if reply is not None:
            await connection.send(reply)


def _without_tag(errors: list[Any], raw: Any) -> list[Any]:
    """Pydantic names a field of a tagged union ``set_level.level``; the client sent ``level``."""
    tag = raw.get("type") if isinstance(raw, dict) else None
    return [
        {**error, "loc": error["loc"][1:]} if error.get("loc", ())[:1] == (tag,) else error
        for error in errors
    ]


async def _dispatch(
    connection: Connection, runtime: Runtime, user: Principal, message: Any
) -> dict[str, Any] | None:
    if isinstance(message, Ping):
        return {"type": "pong", "id": message.id}
    if isinstance(message, Pong):
        return None
    if isinstance(message, Auth):
        raise ApiProblem(409, "this connection is already authenticated", kind="conflict")
    if isinstance(message, Subscribe):
        await _subscribe(connection, runtime, user, message)  # acks itself, before any frame
        return None
    if isinstance(message, Unsubscribe):
        if not connection.remove(message.subscription):
            raise ApiProblem(404, f"no subscription {message.subscription}", kind="not-found")
        return {"type": "ack", "id": message.id, "subscription": message.subscription}
    if isinstance(message, Control):
        if message.type == "stop":
            public = await stop_visible(runtime, user, message.session_id, connection.metrics)
        else:
            target = await control_target(runtime, user, message.session_id)
            command = runtime.sessions.pause if message.type == "pause" else runtime.sessions.resume
            public = from_live(await command(target.id, actor=user.owner, is_admin=user.is_admin))
        return {"type": "ack", "id": message.id, "session": public.model_dump(mode="json")}
    if isinstance(message, SetLevel):
        target = await control_target(runtime, user, message.session_id)
        session = await runtime.sessions.set_level(
            target.id, message.level, actor=user.owner, is_admin=user.is_admin
        )
        return {
            "type": "ack",
            "id": message.id,
            "session": from_live(session).model_dump(mode="json"),
        }
    raise ApiProblem(400, "unknown message", kind="bad-message")  # pragma: no cover


async def _subscribe(
    connection: Connection, runtime: Runtime, user: Principal, message: Subscribe
) -> None:
    address, session_id = _subscription_target(connection, runtime, user, message)
    managed = runtime.devices.find(address)
    hub_device = managed.address if managed is not None else address
    telemetry = None
    if message.telemetry:
        telemetry = runtime.hub.subscribe(
            device=hub_device,
            session_id=session_id,
            from_seq=message.from_seq,
            queue_size=message.queue,
            rate_hz=message.rate_hz,
        )
    events = None
    if message.events:
        events = runtime.bus.subscribe(event_filter(device=address, session_id=session_id))
    sub = LiveSubscription(
        id=connection.next_id(),
        device=address,
        session_id=session_id,
        telemetry=telemetry,
        events=events,
        rate_hz=message.rate_hz,
    )
    # Added before the ack is awaited, so an access change meanwhile ends it and a client gone
    # meanwhile closes it; the ack still goes out first (its send queues before the pumps start).
    connection.add(sub)
    await connection.send(
        {
            "type": "ack",
            "id": message.id,
            "subscription": sub.id,
            "device": address,
            "session_id": session_id,
        }
    )


def _subscription_target(
    connection: Connection, runtime: Runtime, user: Principal, message: Subscribe
) -> tuple[str, str | None]:
    """(device address, live session id or None) a subscribe asks for, once it may have it."""
    if (message.device is None) == (message.session_id is None):
        raise ApiProblem(
            422,
            "give exactly one of device and session_id",
            kind="validation",
            errors=[("device", "exactly one of device and session_id")],
        )
    if len(connection.subscriptions) >= MAX_SUBSCRIPTIONS:
        raise ApiProblem(
            409, f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection", kind="conflict"
        )
    session_id = None
    if message.session_id is not None:
        live = visible_live(runtime, user, message.session_id)
        if live is None:
            raise ApiProblem(
                404,
                f"no live session {message.session_id} visible to you on this hub; "
                "its recorded telemetry is at GET /api/v1/sessions/{id}/telemetry",
                kind="not-found",
            )
        address, session_id = live.address, live.id
    else:
        assert message.device is not None
        address, _ = find_device(runtime, user, message.device)
    if any(s.device == address for s in connection.subscriptions.values()):
        raise ApiProblem(
            409, f"already subscribed to {address} on this connection", kind="conflict"
        )
    return address, session_id


async def close_all(connections: set[Connection]) -> None:
    """At shutdown: tell every client the server is going away."""
    for connection in list(connections):
        with contextlib.suppress(Exception):
            await connection.close(CLOSE_GOING_AWAY, "the hub is shutting down")
