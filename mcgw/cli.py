"""The ``mcgw`` command line: serve, sim, scan, doctor, devices, sessions, pair, token, db, config.

Each command imports only what it needs (bumble and the web stack cost start-up time on a Pi).
Errors print one line saying what went wrong and what to do, and exit non-zero; they never dump
a traceback for a mistake the user can fix. Every command that reads settings goes through
``load()``, so a bad setting is one line naming it, exit code 2.

The admin commands (``pair``, ``token``, ``devices``, ``sessions``) work on the hub's existing
database: they never create or migrate one, so a wrong ``--db`` or working directory is refused
instead of silently starting an empty database. Only ``serve`` (and ``serve --bootstrap``) and
``db upgrade`` create and migrate.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from gateway.config import (
    DEFAULT_PORT,
    InvalidSettings,
    Settings,
    load_settings,
    mask_url,
    public_settings,
)

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.console import Console
    from sqlalchemy.engine import Engine

_T = TypeVar("_T")

app = typer.Typer(
    name="mcgw",
    help="mcgw: the microcurrent BLE gateway.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class _LazyConsole:
    """A rich ``Console`` built on first use. Rich is about 5 MiB resident: ``mcgw serve`` runs
    for months and prints one line, so it never loads it; the other commands do at once."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
        return getattr(self._console, name)


console: Any = _LazyConsole(stderr=True)
out: Any = _LazyConsole(stderr=False)


def escape(text: str) -> str:
    """``rich.markup.escape``, imported when a message is printed."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def new_table(*columns: str) -> Any:
    """A ``rich.table.Table`` with these columns."""
    from rich.table import Table

    return Table(*columns)


DB_URL_HINT = "check --db / MCGW_DB__URL (sqlite:///path/to/mcgw.db or postgresql+psycopg://...)"
NO_DATABASE_HINT = (
    "start the hub once with `mcgw serve` (it creates and migrates its database), "
    "or point --db / MCGW_DB__URL at the hub's database"
)


def fail(message: str, hint: str = "") -> NoReturn:
    """Print ``error: message`` (and ``hint: ...``), one line each however long, and exit 2."""
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)
    if hint:
        console.print(f"[yellow]hint:[/] {escape(hint)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code=2)


def load(**overrides: object) -> Settings:
    """Settings from the environment and config file, with command-line overrides applied
    (keyed by dotted setting, ``None`` when the option was not given)."""
    try:
        return load_settings(**overrides)
    except InvalidSettings as exc:
        fail(
            str(exc),
            "fix or unset the setting named above; README.md's settings table lists every "
            "setting and its range",
        )


def _one_line(exc: BaseException) -> str:
    """A driver error as one line, without SQLAlchemy's SQL echo and background link."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return mask_url(text.splitlines()[0]) if text else type(exc).__name__


def setup_logging(settings: Settings) -> None:
    from gateway.logs import configure_logging

    configure_logging(level=settings.log_level, json_format=settings.log_json)


@app.command()
def sim(
    devices: Annotated[int, typer.Option(min=1, max=50, help="Simulated devices to host.")] = 3,
    hci_port: Annotated[int, typer.Option(help="HCI-over-TCP port for bumble hosts.")] = 9100,
    control_port: Annotated[int, typer.Option(help="Local scenario control port.")] = 9101,
    host: Annotated[str, typer.Option(help="Address to bind both ports to.")] = "127.0.0.1",
    seed: Annotated[int, typer.Option(help="Seed for the devices' physics.")] = 1,
    bluez_bus: Annotated[
        str | None, typer.Option(help="Also serve the air as BlueZ on this D-Bus address.")
    ] = None,
    bluez_adapters: Annotated[int, typer.Option(min=1, max=8, help="BlueZ adapters.")] = 1,
) -> None:
    """Run a virtual radio with simulated devices, reachable over HCI-over-TCP."""
    from ble.sim.process import run_sim_process

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(
            run_sim_process(
                devices=devices,
                host=host,
                hci_port=hci_port,
                control_port=control_port,
                seed=seed,
                announce=lambda line: out.print(line, highlight=False),
                bluez_bus=bluez_bus,
                bluez_adapters=bluez_adapters,
            )
        )
    except OSError as exc:
        fail(f"cannot open the sim ports: {exc}", "pick free ports with --hci-port/--control-port")
    except KeyboardInterrupt:
        pass


@app.command()
def scan(
    ble: Annotated[
        str | None,
        typer.Option(
            help="auto | bluez[:hciN] | sim[:N] | hci:<transport>, or a comma-separated list."
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.5, max=60, help="Seconds to scan.")] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    every: Annotated[
        bool, typer.Option("--all", help="Every advertiser heard, not only microcurrent devices.")
    ] = False,
) -> None:
    """Scan for microcurrent devices and list them (--all: every advertiser heard)."""
    from bleak.exc import BleakError

    from ble.errors import BleError
    from gateway.errors import BluetoothUnavailable
    from gateway.runtime import Runtime

    settings = load(**{"ble.mode": ble})

    async def go() -> list[dict[str, object]]:
        runtime = Runtime(settings)
        await runtime.open_ble()
        try:
            with console.status(f"scanning for {timeout:g} s ..."):
                if every:
                    from mcgw.advertisers import listen

                    return await listen(runtime, timeout)
                found = await runtime.devices.scan(timeout_s=timeout)
        finally:
            await runtime.stop()
        return [asdict(d) for d in found]

    try:
        found = asyncio.run(go())
    except BluetoothUnavailable as exc:
        fail(str(exc))
    except (BleError, BleakError) as exc:
        fail(str(exc), "`mcgw doctor` checks the radio and says what to fix")
    if every:
        from mcgw.advertisers import show

        show(found, as_json=as_json, out=out, console=console)
        return
    if as_json:
        out.print_json(json.dumps(found))
        return
    table = new_table("address", "name", "rssi", "battery", "state")
    for item in found:
        table.add_row(
            *(str(item.get(k, "")) for k in ("address", "name", "rssi", "battery_pct", "state"))
        )
    out.print(table)
    console.print(f"{len(found)} device(s) found")


@app.command()
def doctor(
    ble: Annotated[
        str | None, typer.Option(help="BLE mode to check (default: the setting).")
    ] = None,
    db: Annotated[str | None, typer.Option(help="Database URL to check.")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port to check.")] = None,
    scan: Annotated[float, typer.Option(min=0.5, max=60, help="Seconds to listen.")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check the host as an installer would (Bluetooth, database, port, mDNS, MQTT); print a
    fix for each problem; exit 1 if a check failed."""
    from mcgw.doctor import run

    settings = load(**{"ble.mode": ble, "db.url": db, "api.port": port})
    run(settings, scan_s=scan, as_json=as_json, out=out)


@app.command()
def serve(
    ble: Annotated[
        str | None,
        typer.Option(
            help="auto | bluez[:hciN] | sim[:N] | hci:<bumble transport>, or a comma-separated "
            "list of them, one per radio."
        ),
    ] = None,
    db: Annotated[
        str | None, typer.Option(help="Database URL (sqlite:/// or postgresql+psycopg://).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help=f"Port (default {DEFAULT_PORT}).")] = None,
    bootstrap: Annotated[
        bool,
        typer.Option(help="Print an admin token and a pairing code at start (used by make run)."),
    ] = False,
) -> None:
    """Run the gateway: BLE service, REST + WebSocket API, storage."""
    settings = load(**{"ble.mode": ble, "db.url": db, "api.host": host, "api.port": port})
    proxies = settings.api.trusted_proxies
    setup_logging(settings)
    import uvicorn

    from api.app import create_app

    base = hub_url(settings)
    if bootstrap:
        _bootstrap(settings, base)
    shown = "127.0.0.1" if settings.api.host in ("0.0.0.0", "::") else settings.api.host  # noqa: S104
    print(f"mcgw: serving on http://{shown}:{settings.api.port}  (docs: /docs)", file=sys.stderr)
    print(f"web app: {base}/  (open it on a phone on the same network)", file=sys.stderr)
    try:
        uvicorn.run(
            create_app(settings),
            host=settings.api.host,
            port=settings.api.port,
            log_config=None,
            ws_per_message_deflate=False,
            ws_max_size=settings.api.max_body_bytes,
            # Forwarded headers only from the configured proxies: uvicorn's default believes
            # X-Forwarded-For from 127.0.0.1, which any local process could then spoof.
            proxy_headers=bool(proxies),
            forwarded_allow_ips=",".join(proxies) if proxies else None,
            timeout_graceful_shutdown=5,
            lifespan="on",
        )
    except OSError as exc:
        fail(f"cannot listen on {settings.api.host}:{settings.api.port}: {exc}", "use --port")


def lan_addresses() -> list[str]:
    """This host's IPv4 addresses a phone on the LAN could reach (no loopback, no link-local)."""
    import ipaddress

    import ifaddr

    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):
                continue
            address = ipaddress.ip_address(ip.ip)
            if not (address.is_loopback or address.is_link_local):
                found.append(ip.ip)
    return list(dict.fromkeys(found))


def hub_url(settings: Settings) -> str:
    """The URL a phone on the LAN opens: the listening address, or this host's first LAN
    address when the hub listens on every interface (127.0.0.1 if it has none)."""
    host = settings.api.host
    if host in ("0.0.0.0", "::"):  # noqa: S104 - a wildcard: name an address a phone can reach
        host = next(iter(lan_addresses()), "127.0.0.1")
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api.port}"


PAIR_LINK = "{base}/#/pair/{code}"
"""The web page's pairing route; the code travels in the fragment, never sent to a server."""


def print_qr(text: str) -> None:
    """``text`` as a QR code in the terminal (two modules per character)."""
    import segno

    segno.make(text, error="m").terminal(out=sys.stdout, compact=True)


def _bootstrap(settings: Settings, base: str) -> None:
    from gateway.storage import pairing, repo

    def issue(session: Any) -> tuple[str, str]:
        admins = [u for u in repo.list_users(session=session) if u.is_admin]
        if admins:
            admin = admins[0]
        else:
            admin = repo.create_user(session=session, name="admin", is_admin=True)
        assert admin.id is not None
        _row, token = repo.create_token(
            session=session, user_id=admin.id, name="make run", pepper=_pepper(settings)
        )
        code = pairing.create_pairing_code(
            session=session,
            pepper=_pepper(settings),
            user_name="phone",
            ttl_s=settings.api.pairing_code_ttl_s,
        )
        return token, code.code

    token, code = _with_db(settings, issue, create=True)
    out.print(f"admin token:  {token}")
    out.print(
        f"pairing code: {code}  (valid {settings.api.pairing_code_ttl_s // 60} min; "
        "POST /api/v1/pair)"
    )
    out.print(f"pairing link: {PAIR_LINK.format(base=base, code=code)}", soft_wrap=True)


def _pepper(settings: Settings) -> str:
    return settings.token_pepper.get_secret_value()


def _with_db(settings: Settings, fn: Callable[[Any], _T], *, create: bool = False) -> _T:
    """Run ``fn(session)`` against the hub's database and commit.

    ``create=True`` (``serve --bootstrap``, ``db upgrade``) creates and migrates the database;
    otherwise it must already exist with the mcgw schema, or the command is refused.
    """
    import sqlalchemy as sa
    from sqlmodel import Session

    shown = mask_url(settings.db.url)
    engine = _migrated_db(settings) if create else _existing_db(settings)
    try:
        with Session(engine) as session:
            result = fn(session)
            session.commit()
            return result
    except sa.exc.SQLAlchemyError as exc:
        fail(
            f"the database {shown} refused the request: {_one_line(exc)}",
            "if the hub is newer or older than this mcgw, run `mcgw db upgrade` with the "
            "hub's version",
        )
    finally:
        engine.dispose()


def _migrated_db(settings: Settings) -> Engine:
    """The configured database, created if need be and migrated to the latest revision."""
    from gateway.storage.engine import create_engine_from_settings, migrate_for_hub, needs_upgrade

    try:
        engine = create_engine_from_settings(settings.db)
        if needs_upgrade(engine):  # apart: `serve --bootstrap` must not keep Alembic resident
            migrate_for_hub(settings.db, engine)
    except Exception as exc:  # noqa: BLE001 - any driver error becomes one clear line
        fail(
            f"cannot open the database {mask_url(settings.db.url)}: {_one_line(exc)}",
            DB_URL_HINT,
        )
    return engine


def _existing_db(settings: Settings) -> Engine:
    """The hub's database as it is: never created, never migrated (that is `mcgw serve`'s and
    `mcgw db upgrade`'s job), refused when missing or without the mcgw schema."""
    from sqlalchemy.engine import make_url

    from gateway.storage.engine import create_engine_from_settings, current_revision

    shown = mask_url(settings.db.url)
    try:
        url = make_url(settings.db.url)
    except Exception as exc:  # noqa: BLE001 - a malformed URL becomes one clear line
        fail(f"cannot parse the database url {shown}: {_one_line(exc)}", DB_URL_HINT)
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:"):
            fail(f"no mcgw database at {shown} (an in-memory database is empty)", NO_DATABASE_HINT)
        if not database.startswith("file:"):
            # Checked before any engine exists: connecting would create the file (and its
            # directory), which is exactly what must not happen.
            path = Path(database).expanduser().absolute()
            if not path.is_file():
                fail(f"no mcgw database at {path}", NO_DATABASE_HINT)
    try:
        engine = create_engine_from_settings(settings.db)
        revision = current_revision(engine)
    except Exception as exc:  # noqa: BLE001 - any driver error becomes one clear line
        fail(f"cannot open the database {shown}: {_one_line(exc)}", DB_URL_HINT)
    if revision is None:
        engine.dispose()
        fail(f"no mcgw database at {shown}: it holds no mcgw schema", NO_DATABASE_HINT)
    return engine


@app.command()
def pair(
    name: Annotated[str, typer.Option(help="Name of the user the phone will belong to.")] = "phone",
    user_id: Annotated[
        int | None, typer.Option(help="Pair another phone of an existing user.")
    ] = None,
    admin: Annotated[bool, typer.Option(help="The paired phone gets admin rights.")] = False,
    db: Annotated[str | None, typer.Option(help="Database URL.")] = None,
    qr: Annotated[
        bool, typer.Option(help="Also print the web page's pairing link and its QR code.")
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(help="The hub's URL as phones reach it (default: this host's LAN address)."),
    ] = None,
) -> None:
    """Print a one-time 6-digit pairing code (valid 5 minutes) for a phone app."""
    from gateway.errors import GatewayError
    from gateway.storage import pairing

    settings = load(**{"db.url": db})
    try:
        issued = _with_db(
            settings,
            lambda session: pairing.create_pairing_code(
                session=session,
                pepper=_pepper(settings),
                user_id=user_id,
                user_name=name,
                is_admin=admin,
                ttl_s=settings.api.pairing_code_ttl_s,
            ),
        )
    except GatewayError as exc:
        fail(str(exc))
    out.print(issued.code)
    console.print(
        f"valid until {issued.expires_at:%H:%M:%S} UTC; enter it in the app (POST /api/v1/pair)"
    )
    if qr:
        link = PAIR_LINK.format(base=(url or hub_url(settings)).rstrip("/"), code=issued.code)
        out.print(link, soft_wrap=True, highlight=False)
        print_qr(link)


token_app = typer.Typer(help="API tokens for scripts and admins.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="Who or what the token is for.")],
    admin: Annotated[bool, typer.Option(help="Create an admin user for it.")] = False,
    user_id: Annotated[int | None, typer.Option(help="Issue it to an existing user.")] = None,
    db: Annotated[str | None, typer.Option(help="Database URL.")] = None,
) -> None:
    """Create a user (or use --user-id) and print a bearer token for it. Shown once."""
    from gateway.errors import GatewayError
    from gateway.storage import repo

    settings = load(**{"db.url": db})

    def issue(session: Any) -> str:
        uid = user_id
        if uid is None:
            user = repo.create_user(session=session, name=name, is_admin=admin)
            uid = user.id
        assert uid is not None
        _row, token = repo.create_token(
            session=session, user_id=uid, name=name, pepper=_pepper(settings)
        )
        return token

    try:
        token = _with_db(settings, issue)
    except GatewayError as exc:
        fail(str(exc))
    out.print(token)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="The token's id (see GET /api/v1/tokens).")],
    db: Annotated[str | None, typer.Option(help="Database URL.")] = None,
) -> None:
    """Revoke a token: requests with it are refused from now on."""
    from gateway.errors import GatewayError
    from gateway.storage import repo

    settings = load(**{"db.url": db})
    try:
        _with_db(settings, lambda session: repo.revoke_token(session=session, token_id=token_id))
    except GatewayError as exc:
        fail(str(exc))
    console.print(f"token {token_id} revoked")


db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(db: Annotated[str | None, typer.Option(help="Database URL.")] = None) -> None:
    """Create the database if need be and apply its migrations (`mcgw serve` does too)."""
    from gateway.storage.engine import current_revision

    settings = load(**{"db.url": db})

    def revision(session: Any) -> str | None:
        return current_revision(session.get_bind())

    with console.status("migrating ..."):
        rev = _with_db(settings, revision, create=True)
    console.print(f"database at revision {rev}: {mask_url(settings.db.url)}", highlight=False)


@app.command()
def devices(
    db: Annotated[str | None, typer.Option(help="Database URL.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the devices this hub knows (from the database)."""
    from gateway.storage import repo

    settings = load(**{"db.url": db})
    _print_stored(
        settings,
        lambda session: repo.list_devices(session=session, hub_id=settings.hub_id),
        ("address", "name", "model", "firmware", "bonded", "owner_id"),
        as_json,
    )


@app.command()
def sessions(
    db: Annotated[str | None, typer.Option(help="Database URL.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List recent sessions (from the database), newest first."""
    from gateway.storage import history

    settings = load(**{"db.url": db})
    _print_stored(
        settings,
        lambda session: history.list_sessions(session=session, limit=limit).items,
        ("id", "device_address", "program_slug", "intensity", "state", "end_reason", "created_at"),
        as_json,
    )


def _print_stored(
    settings: Settings,
    fetch: Callable[[Any], Iterable[BaseModel]],
    columns: tuple[str, ...],
    as_json: bool,
) -> None:
    """Rows read from the hub's database, as a table or JSON."""
    rows = _with_db(settings, lambda session: [r.model_dump(mode="json") for r in fetch(session)])
    _print_rows(rows, columns, as_json)


def _print_rows(rows: list[dict[str, Any]], columns: tuple[str, ...], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(rows, default=str))
        return
    table = new_table(*columns)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    out.print(table)
    console.print(f"{len(rows)} row(s)")


@app.command()
def fleet(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    timeout: Annotated[float, typer.Option(min=0.5, max=60, help="Seconds to wait.")] = 5.0,
) -> None:
    """List every hub on the MQTT broker: availability, devices, live sessions."""
    from gateway.mqtt.fleet import FleetUnavailable, read_fleet

    settings = load()
    try:
        hubs = asyncio.run(read_fleet(settings.mqtt, timeout_s=timeout))
    except FleetUnavailable as exc:
        fail(str(exc), "set MCGW_MQTT__URL (and MCGW_MQTT__TOPIC_PREFIX) as the hubs have it")
    if as_json:
        out.print_json(json.dumps([hub.as_dict() for hub in hubs]))
        return
    table = new_table("hub", "availability", "devices", "live sessions")
    for hub in hubs:
        devices = ", ".join(
            f"{d['device']} ({d['connection']})" for d in hub.devices if d.get("device")
        )
        sessions = ", ".join(f"{s['device']} {s['state']}" for s in hub.sessions)
        table.add_row(hub.hub_id, hub.availability, devices or "-", sessions or "-")
    out.print(table)
    console.print(f"{len(hubs)} hub(s)")


config_app = typer.Typer(help="Inspect settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the effective settings (environment + config file), secrets masked."""
    settings = load()
    data = public_settings(settings)
    if as_json:
        out.print_json(json.dumps(data))
        return
    table = new_table("setting", "value")

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict) and value and prefix != "safety.zone_caps_ua":
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            table.add_row(prefix, json.dumps(value))

    walk("", data)
    out.print(table)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["DEFAULT_PORT", "app", "main"]
