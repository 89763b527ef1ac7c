"""A local control endpoint for simulated devices: the scenario API for other processes.

:class:`ControlServer` serves a small Starlette app with uvicorn on 127.0.0.1 (JSON bodies), so
``curl`` works as well as :func:`call`. The server is started and stopped with the simulator's
lifecycle (``async with ControlServer(devices, host=..., port=...)``); it binds its socket
itself, so a port in use is an ``OSError`` at ``start()``, and it leaves signal handling to the
process that embeds it.

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

The radios: with the HCI-over-TCP server (``mcgw sim``), each connected HCI client (a gateway's
radio) is a radio on the shared virtual air, named by its controller's address, which is the
address the gateway reports for that radio (``RadioReport.address``)::

    GET  /radios                        -> 200 {"radios": [{"address": "C0:...", "deaf": bool,
                                                             "connections": int}, ...]}
    POST /radios/<address>/deaf  {"deaf": bool}
         -> 200 {"radio": <entry>}      it hears no adverts, so it opens no new connection;
                                        links it already holds stay up (as with an antenna
                                        that got worse: only new links are affected)
    POST /radios/<address>/drop  {}
         -> 200 {"radio": <entry before>}  its TCP connection is cut as if the dongle was
                                        pulled: the gateway sees the transport lost, its links
                                        drop (devices see a supervision timeout)
    POST /devices/<address>/set_signal  {"radio": "<radio address>", "rssi": int dBm}
         -> 200 {"result": null, "device": <snapshot>}  the RSSI that radio hears from that
                                        device from now on (-50 for a pair never set)

Deafness and signals are kept by address, so they outlive a dropped radio that reconnects.
Addresses in any case; an unknown radio is 404 (``deaf``/``drop``), any well-formed radio
address is accepted by ``set_signal`` (a radio may be set before it connects). Without the HCI
server (a gateway's in-process ``sim`` mode) ``/radios`` answers 404.

:func:`request` and :func:`call` are its client (the standard library's ``urllib`` in a thread:
the client is for tests and scripts, and httpx is only a development dependency).

It deliberately has no authentication (it binds to loopback only and exists for tests and
demos) and is not part of the gateway's API.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ble.errors import BleError
from ble.sim.peripheral import SimulatedDevice

if TYPE_CHECKING:
    from ble.bumble.hci_server import HciTcpServer

log = logging.getLogger(__name__)

CONTROL_TIMEOUT_S = 5.0
"""Upper bound for one exchange (client), and for finishing requests in flight at ``stop()``."""
MAX_BODY_BYTES = 64 * 1024
_START_POLL_S = 0.005
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

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


class ControlError(BleError):
    """The control endpoint refused a request or could not be reached."""


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json(payload: Any, status: int = 200) -> Response:
    # json.dumps as is (Starlette's JSONResponse refuses NaN, which a snapshot may hold).
    return Response(json.dumps(payload), status_code=status, media_type="application/json")


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the simulator's event loop: the embedding process owns its signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ControlServer:
    """Serves the scenario API of ``devices`` (a live collection: devices may come and go)."""

    def __init__(
        self,
        devices: Collection[SimulatedDevice],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        hci: HciTcpServer | None = None,
    ) -> None:
        self._devices = devices
        self._hci = hci
        self._host = host
        self._port = port
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = Starlette(
            routes=[
                Route("/devices", self._list, methods=["GET"]),
                Route("/devices/{address}", self._read, methods=["GET"]),
                Route("/devices/{address}/{action}", self._act, methods=_ALL_METHODS),
                Route("/radios", self._radios, methods=["GET"]),
                Route("/radios/{address}/{action}", self._radio_act, methods=_ALL_METHODS),
            ],
            exception_handlers={HTTPException: self._no_route},
        )

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        if self._socket is None:
            raise ControlError("the control server is not started; call start() first")
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        """Bind (``OSError`` if the port is taken) and serve until ``stop()``."""
        self._socket = socket.create_server((self._host, self._port))
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(CONTROL_TIMEOUT_S),
        )
        server = _EmbeddedServer(config)
        self._server = server
        self._task = asyncio.create_task(server.serve([self._socket]), name="sim-control")
        while not server.started:
            if self._task.done():
                await self._task  # raises what stopped it
                raise ControlError("the control server stopped while starting")
            await asyncio.sleep(_START_POLL_S)

    async def stop(self) -> None:
        server, task, sock = self._server, self._task, self._socket
        self._server = self._task = self._socket = None
        if server is not None:
            server.should_exit = True
        if task is not None:
            try:
                await task
            finally:
                if sock is not None:
                    sock.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # -- endpoints ---------------------------------------------------------------------------

    async def _list(self, _request: Request) -> Response:
        return await _answer(lambda: {"devices": [d.snapshot() for d in self._devices]})

    async def _read(self, request: Request) -> Response:
        return await _answer(lambda: self._device(request.path_params["address"]).snapshot())

    async def _act(self, request: Request) -> Response:
        async def act() -> Any:
            if request.method != "POST":
                raise _HttpError(405, f"use POST for actions, not {request.method}")
            device = self._device(request.path_params["address"])
            action, args = request.path_params["action"], _parse_args(await _body(request))
            if action == "set_signal":
                self._set_signal(device, args)
                return {"result": None, "device": device.snapshot()}
            result = _run_action(device, action, args)
            return {"result": result, "device": device.snapshot()}

        return await _answer(act)

    async def _radios(self, _request: Request) -> Response:
        return await _answer(lambda: {"radios": self._hci_server().radios()})

    async def _radio_act(self, request: Request) -> Response:
        async def act() -> Any:
            if request.method != "POST":
                raise _HttpError(405, f"use POST for radio actions, not {request.method}")
            server = self._hci_server()
            address, action = request.path_params["address"].upper(), request.path_params["action"]
            args = _parse_args(await _body(request))
            entry = next((r for r in server.radios() if r["address"] == address), None)
            if entry is None:
                known = ", ".join(str(r["address"]) for r in server.radios()) or "none"
                raise _HttpError(404, f"no radio at {address}; connected: {known}")
            if action == "deaf":
                deaf = args.get("deaf")
                if set(args) != {"deaf"} or not isinstance(deaf, bool):
                    raise _HttpError(400, 'deaf takes {"deaf": true|false}')
                log.info("scenario radio %s deaf=%s", address, deaf)
                server.radio.set_deaf(address, deaf)
                entry = next(r for r in server.radios() if r["address"] == address)
            elif action == "drop":
                if args:
                    raise _HttpError(400, "drop takes no arguments: send {}")
                log.info("scenario radio %s dropped", address)
                server.drop(address)
            else:
                raise _HttpError(404, f"unknown radio action {action!r}; actions: deaf, drop")
            return {"radio": entry}

        return await _answer(act)

    def _hci_server(self) -> HciTcpServer:
        if self._hci is None:
            raise _HttpError(404, "no radios here: only `mcgw sim` serves HCI clients")
        return self._hci

    def _set_signal(self, device: SimulatedDevice, args: dict[str, Any]) -> None:
        radio, rssi = args.get("radio"), args.get("rssi")
        if set(args) != {"radio", "rssi"} or not isinstance(radio, str):
            raise _HttpError(400, 'set_signal takes {"radio": "<radio address>", "rssi": int}')
        if isinstance(rssi, bool) or not isinstance(rssi, int) or not -127 <= rssi <= 20:
            raise _HttpError(400, f"set_signal: rssi must be whole dBm, -127 to 20, not {rssi!r}")
        try:
            self._hci_server().radio.set_signal(device.address, radio, rssi)
        except BleError as exc:
            raise _HttpError(400, f"set_signal failed: {exc}") from exc
        log.info("scenario %s heard at %d dBm by radio %s", device.address, rssi, radio.upper())

    async def _no_route(self, request: Request, _exc: Exception) -> Response:
        # Starlette's own 404 and 405 (a GET-only path asked with another method): no route.
        where = f"{request.method} {request.url.path}"
        return _json({"error": f"no route {where}; see ble/sim/control.py for the routes"}, 404)

    def _device(self, address: str) -> SimulatedDevice:
        for device in self._devices:
            if device.address.upper() == address.upper():
                return device
        known = ", ".join(device.address for device in self._devices) or "none"
        raise _HttpError(404, f"no simulated device at {address}; known: {known}")


async def _answer(handler: Callable[[], Any]) -> Response:
    """Run an endpoint's work; its refusal or a simulator bug becomes the JSON error reply."""
    try:
        payload = handler()
        if inspect.isawaitable(payload):
            payload = await payload
    except _HttpError as exc:
        return _json({"error": str(exc)}, exc.status)
    except Exception as exc:
        log.exception("control request failed")
        return _json({"error": f"simulator error: {exc!r}"}, 500)
    return _json(payload)


async def _body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "0")
    try:
        length = int(declared)
    except ValueError:
        raise _HttpError(400, f"bad Content-Length {declared!r}") from None
    if length > MAX_BODY_BYTES:
        raise _HttpError(413, f"body of {length} bytes is over {MAX_BODY_BYTES}")
    return await request.body()


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
    data = json.dumps(body).encode() if body is not None else None
    url = f"http://{host}:{port}{path}"
    try:
        async with asyncio.timeout(CONTROL_TIMEOUT_S):
            status, raw = await asyncio.to_thread(_exchange, url, method, data)
    except (OSError, TimeoutError) as exc:
        raise ControlError(f"no simulator control endpoint at {host}:{port}: {exc}") from exc
    try:
        reply = json.loads(raw)
    except ValueError as exc:
        raise ControlError(
            f"{host}:{port} did not answer like a simulator control endpoint"
        ) from exc
    if status != 200:
        raise ControlError(f"{method} {path} failed ({status}): {reply.get('error', reply)}")
    return reply


# No proxy: the endpoint is local, whatever http_proxy says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _exchange(url: str, method: str, data: bytes | None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    exchange = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - http to a given host
    try:
        with _OPENER.open(exchange, timeout=CONTROL_TIMEOUT_S) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
