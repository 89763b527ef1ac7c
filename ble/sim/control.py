"""A local control endpoint for simulated devices: the scenario API for other processes.

:class:`ControlServer` listens on 127.0.0.1 and speaks a minimal HTTP/1.1 with JSON bodies, so
``curl`` works as well as :func:`call`. One request per connection (``Connection: close``).

Wire format::

    GET  /devices                      -> 200 {"devices": [<snapshot>, ...]}
    GET  /devices/<address>            -> 200 <snapshot>
    POST /devices/<address>/<action>   body: a JSON object of keyword arguments (may be empty)
                                       -> 200 {"result": <return value or null>,
                                               "device": <snapshot after the action>}

    errors -> 400 (bad JSON or arguments, or the action failed), 404 (unknown device, action
              or path), 405 (wrong method), 413 (body over 64 KiB), 500 (simulator bug);
              body {"error": "<what and what to do>"}

``<address>`` is the device's Bluetooth address, any case (``C0:00:00:00:10:01``). A snapshot
is :meth:`SimulatedDevice.snapshot` (name, address, connected, state, faults, output_ua,
max_output_ua, queue, intensity_pct, contact, impedance_ohm, battery_pct, temperature_c,
counters). Actions and their arguments (see :class:`~ble.sim.peripheral.SimulatedDevice`)::

    set_on_skin {"on_skin": bool}          set_charging {"charging": bool}
    dry_gel {"minutes": number}            apply_gel {}
    set_battery {"pct": number}            set_temperature {"celsius": number}
    inject_over_current {"ua": number}     inject_hardware_fault {"active": bool = true}
    refuse_commands {"n": int, "opcodes": [int] | null = null}
    drop_link {}   vanish {}   reappear {}
    set_radio_latency {"ms": number}       stall {"ms": number}       send_malformed {"n": int}

Example::

    curl -X POST -d '{"on_skin": false}' localhost:PORT/devices/C0:00:00:00:10:01/set_on_skin

It deliberately has no authentication (it binds to loopback only and exists for tests and
demos), no keep-alive and no HTTP features beyond this; it is not part of the gateway's API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Collection
from typing import Any, Self

from ble.errors import BleError
from ble.sim.peripheral import SimulatedDevice

log = logging.getLogger(__name__)

CONTROL_TIMEOUT_S = 5.0
"""Upper bound for reading one request (server) or one whole exchange (client)."""
MAX_BODY_BYTES = 64 * 1024

_NUMBER = (int, float)
# action -> {argument: (accepted types, required)}; bool is checked apart because it is an int.
_ACTIONS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "set_on_skin": {"on_skin": ((bool,), True)},
    "dry_gel": {"minutes": (_NUMBER, True)},
    "apply_gel": {},
    "set_battery": {"pct": (_NUMBER, True)},
    "set_charging": {"charging": ((bool,), True)},
    "set_temperature": {"celsius": (_NUMBER, True)},
    "inject_over_current": {"ua": (_NUMBER, True)},
    "inject_hardware_fault": {"active": ((bool,), False)},
    "refuse_commands": {"n": ((int,), True), "opcodes": ((list, type(None)), False)},
    "drop_link": {},
    "vanish": {},
    "reappear": {},
    "set_radio_latency": {"ms": (_NUMBER, True)},
    "stall": {"ms": (_NUMBER, True)},
    "send_malformed": {"n": ((int,), True)},
}
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    500: "Internal Server Error",
}


class ControlError(BleError):
    """The control endpoint refused a request or could not be reached."""


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlServer:
    """Serves the scenario API of ``devices`` (a live collection: devices may come and go)."""

    def __init__(
        self, devices: Collection[SimulatedDevice], *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._devices = devices
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        if self._server is None:
            raise ControlError("the control server is not started; call start() first")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        handlers, self._handlers = list(self._handlers), set()
        for task in handlers:
            task.cancel()
        for task in handlers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:  # owned, so stop() can cancel a handler stuck on a slow client
            self._handlers.add(task)
        try:
            try:
                async with asyncio.timeout(CONTROL_TIMEOUT_S):
                    method, path, body = await _read_request(reader)
                status, payload = 200, self._dispatch(method, path, body)
            except _HttpError as exc:
                status, payload = exc.status, {"error": str(exc)}
            except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
                return  # the client went away; nobody to answer
            except Exception as exc:
                log.exception("control request failed")
                status, payload = 500, {"error": f"simulator error: {exc!r}"}
            data = json.dumps(payload).encode()
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + data)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            writer.close()
            self._handlers.discard(task)

    def _dispatch(self, method: str, path: str, body: bytes) -> Any:
        parts = [part for part in path.split("?")[0].split("/") if part]
        if parts == ["devices"] and method == "GET":
            return {"devices": [device.snapshot() for device in self._devices]}
        if len(parts) == 2 and parts[0] == "devices" and method == "GET":
            return self._device(parts[1]).snapshot()
        if len(parts) == 3 and parts[0] == "devices":
            if method != "POST":
                raise _HttpError(405, f"use POST for actions, not {method}")
            device = self._device(parts[1])
            result = _run_action(device, parts[2], _parse_args(body))
            return {"result": result, "device": device.snapshot()}
        raise _HttpError(404, f"no route {method} {path}; see ble/sim/control.py for the routes")

    def _device(self, address: str) -> SimulatedDevice:
        for device in self._devices:
            if device.address.upper() == address.upper():
                return device
        known = ", ".join(device.address for device in self._devices) or "none"
        raise _HttpError(404, f"no simulated device at {address}; known: {known}")


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    request_line = (await reader.readline()).decode("latin-1").split()
    if len(request_line) != 3:
        raise _HttpError(400, "malformed HTTP request line")
    method, path, _version = request_line
    length = 0
    while (line := (await reader.readline()).decode("latin-1").strip()) != "":
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            try:
                length = int(value.strip())
            except ValueError:
                raise _HttpError(400, f"bad Content-Length {value.strip()!r}") from None
    if length > MAX_BODY_BYTES:
        raise _HttpError(413, f"body of {length} bytes is over {MAX_BODY_BYTES}")
    return method.upper(), path, await reader.readexactly(length) if length else b""


def _parse_args(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        args = json.loads(body)
    except json.JSONDecodeError as exc:
        raise _HttpError(400, f"body is not JSON: {exc}") from exc
    if not isinstance(args, dict):
        raise _HttpError(400, "body must be a JSON object of keyword arguments")
    return args


def _run_action(device: SimulatedDevice, action: str, args: dict[str, Any]) -> Any:
    spec = _ACTIONS.get(action)
    if spec is None:
        raise _HttpError(404, f"unknown action {action!r}; actions: {', '.join(sorted(_ACTIONS))}")
    for name, value in args.items():
        if name not in spec:
            raise _HttpError(400, f"{action} takes no argument {name!r}; it takes {list(spec)}")
        types, _required = spec[name]
        is_bool = isinstance(value, bool)
        if (is_bool and bool not in types) or not isinstance(value, types):
            raise _HttpError(400, f"{action}: {name}={value!r} has the wrong type")
    missing = [name for name, (_types, required) in spec.items() if required and name not in args]
    if missing:
        raise _HttpError(400, f"{action} needs {missing}")
    opcodes = args.get("opcodes")
    if opcodes is not None and not all(isinstance(o, int) for o in opcodes):
        raise _HttpError(400, "opcodes must be a list of integers")
    log.info("scenario %s %s %s", device.address, action, args)
    try:
        result: Any = getattr(device, action)(**args)
    except (ValueError, BleError) as exc:
        raise _HttpError(400, f"{action} failed: {exc}") from exc
    return result


async def call(port: int, address: str, action: str, /, **args: Any) -> dict[str, Any]:
    """Run one scenario action on the device at ``address``; return the device snapshot after it.

    Raises ControlError with the server's message if it refuses. From synchronous code:
    ``asyncio.run(call(port, "C0:00:00:00:10:01", "set_on_skin", on_skin=False))``.
    """
    reply = await request(port, "POST", f"/devices/{address}/{action}", args)
    return dict(reply["device"])


async def request(
    port: int,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    host: str = "127.0.0.1",
) -> Any:
    """One HTTP exchange with a control server; return the decoded JSON reply."""
    data = json.dumps(body).encode() if body is not None else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    try:
        async with asyncio.timeout(CONTROL_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(head.encode() + data)
                await writer.drain()
                raw = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        raise ControlError(f"no simulator control endpoint at {host}:{port}: {exc}") from exc
    status_line, _, rest = raw.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    try:
        status = int(status_line.split()[1])
        reply = json.loads(payload)
    except (IndexError, ValueError) as exc:
        raise ControlError(
            f"{host}:{port} did not answer like a simulator control endpoint"
        ) from exc
    if status != 200:
        raise ControlError(f"{method} {path} failed ({status}): {reply.get('error', reply)}")
    return reply
