"""The hub's other outside parts for ``mcgw doctor``: database, journal, HTTP port, mDNS, MQTT.

- database: the configured URL is reachable and at this mcgw's migration head. A SQLite file
  that does not exist yet is only a warning (``mcgw serve`` creates it) and is never created
  here; a database at another revision says which command brings it level;
- journal: its directory exists (or can be made) and is writable;
- port: the API's host and port can be bound now (released at once); a port held by a running
  mcgw hub is told apart from one held by something else;
- mDNS (when on): the configured interfaces have IPv4 addresses, the mDNS port can be joined
  for multicast, and the API listens where phones can reach what is announced;
- MQTT (when configured): the broker accepts this hub's credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
import urllib.request
import uuid
from pathlib import Path

from gateway.config import Settings, mask_url
from gateway.doctor import Check, Status

__all__ = ["service_checks"]

HTTP_PROBE_TIMEOUT_S = 1.0
MDNS_GROUP, MDNS_PORT = "224.0.0.251", 5353
MQTT_TIMEOUT_S = 6.0


async def service_checks(settings: Settings) -> list[Check]:
    """database, journal, port, mdns, mqtt (in that order)."""
    database = await asyncio.to_thread(_database, settings)
    port = await asyncio.to_thread(_port, settings.api.host, settings.api.port)
    return [
        database,
        _journal(settings),
        port,
        _mdns(settings),
        await _mqtt(settings),
    ]


# --- database --------------------------------------------------------------------------------


def _head_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    from gateway.storage.engine import MIGRATIONS_DIR

    return set(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads())


def _database(settings: Settings) -> Check:
    from sqlalchemy.engine import make_url

    from gateway.storage.engine import create_engine_from_settings, current_revision

    shown = mask_url(settings.db.url)
    url_fix = "set MCGW_DB__URL to sqlite:///path/to/mcgw.db or postgresql+psycopg://user@host/db"
    try:
        url = make_url(settings.db.url)
    except Exception as exc:  # noqa: BLE001 - a malformed URL is one finding
        return Check("database", Status.FAIL, f"cannot parse {shown}: {exc}", url_fix)
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:"):
            return Check(
                "database",
                Status.WARN,
                f"{shown} is in memory: every record is lost when the hub stops",
                url_fix,
            )
        if not database.startswith("file:"):
            path = Path(database).expanduser().absolute()
            if not path.is_file():
                return _no_sqlite_file(path)
            if not os.access(path, os.R_OK | os.W_OK):
                return Check(
                    "database",
                    Status.FAIL,
                    f"{path} is not readable and writable by this user",
                    f"run the hub as the file's owner, or `sudo chown $USER {path}`",
                )
    try:
        engine = create_engine_from_settings(settings.db)
        try:
            revision = current_revision(engine)
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any driver error is one finding
        text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return Check(
            "database",
            Status.FAIL,
            f"cannot open {shown}: {mask_url(text[0]) if text else type(exc).__name__}",
            "check that the database server runs and that MCGW_DB__URL names the right host, "
            "user, password and database",
        )
    heads = _head_revisions()
    if revision is None:
        return Check(
            "database",
            Status.FAIL,
            f"{shown} answers but holds no mcgw schema",
            "`mcgw db upgrade` creates it (as does `mcgw serve`); or point MCGW_DB__URL at the "
            "hub's database",
        )
    if revision in heads:
        return Check("database", Status.OK, f"{shown} reachable, migrated (revision {revision})")
    return Check(
        "database",
        Status.WARN,
        f"{shown} is at revision {revision}; this mcgw expects {', '.join(sorted(heads))}",
        "`mcgw db upgrade` (or `mcgw serve`) migrates it; if the database is newer, it belongs "
        "to a newer mcgw: upgrade this one",
    )


def _no_sqlite_file(path: Path) -> Check:
    directory = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path("/"))
    if not os.access(directory, os.W_OK):
        return Check(
            "database",
            Status.FAIL,
            f"no database at {path}, and {directory} is not writable to create it",
            f"let this user write {directory}, or set MCGW_DB__URL to a writable place",
        )
    return Check(
        "database",
        Status.WARN,
        f"no database at {path} yet",
        "`mcgw serve` creates it on its first start (or `mcgw db upgrade` now)",
    )


def _journal(settings: Settings) -> Check:
    path = settings.db.journal_file(settings.hub_id)
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    if os.access(existing if existing.is_dir() else existing.parent, os.W_OK) and (
        existing != path or os.access(path, os.W_OK)
    ):
        return Check("journal", Status.OK, f"{path} writable")
    return Check(
        "journal",
        Status.FAIL,
        f"the session journal {path} cannot be written ({existing} is not writable)",
        "set MCGW_DB__JOURNAL_PATH to a writable place, or let this user write there",
    )


# --- the HTTP port ---------------------------------------------------------------------------


def _port(host: str, port: int) -> Check:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = f"{host}:{port}"
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # As uvicorn binds: SO_REUSEADDR, so a port in TIME_WAIT counts as free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            hub = _hub_at(host, port)
            if hub is not None:
                return Check(
                    "port",
                    Status.WARN,
                    f"{where} is in use by a running mcgw hub ({hub})",
                    "that is fine if it is this hub; to start another, stop it first or set "
                    "MCGW_API__PORT",
                )
            return Check(
                "port",
                Status.FAIL,
                f"{where} is in use by another program",
                f"free it (`sudo ss -ltnp 'sport = :{port}'` names the program) or set "
                "MCGW_API__PORT to a free port",
            )
        if exc.errno == errno.EACCES:
            return Check(
                "port",
                Status.FAIL,
                f"{where}: binding a port below 1024 needs privileges",
                "use a port above 1023 (the default is 8420), or grant CAP_NET_BIND_SERVICE",
            )
        if exc.errno == errno.EADDRNOTAVAIL:
            return Check(
                "port",
                Status.FAIL,
                f"{host} is not an address of this host",
                "set MCGW_API__HOST to one of its addresses, or 0.0.0.0 for all",
            )
        return Check("port", Status.FAIL, f"cannot bind {where}: {exc}", "set MCGW_API__PORT")
    return Check("port", Status.OK, f"{where} free")


def _hub_at(host: str, port: int) -> str | None:
    """``hub <id>`` if an mcgw hub answers its health route on ``port``, else None."""
    target = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    target = f"[{target}]" if ":" in target else target
    try:
        with urllib.request.urlopen(
            f"http://{target}:{port}/api/v1/health", timeout=HTTP_PROBE_TIMEOUT_S
        ) as answer:
            body = json.loads(answer.read())
    except (OSError, ValueError):
        return None
    return f"hub {body['hub_id']}" if isinstance(body, dict) and "hub_id" in body else None


# --- mDNS ------------------------------------------------------------------------------------


def _mdns(settings: Settings) -> Check:
    if not settings.mdns:
        return Check("mdns", Status.SKIP, "off (MCGW_MDNS=false): phones find the hub by address")
    import ifaddr

    from gateway.mdns import _interface_addresses

    adapters = list(ifaddr.get_adapters())
    if settings.mdns_interfaces:
        unresolved = [
            entry for entry in settings.mdns_interfaces if not _interface_addresses(entry, adapters)
        ]
        if unresolved:
            return Check(
                "mdns",
                Status.FAIL,
                f"MCGW_MDNS_INTERFACES names {', '.join(unresolved)}, which has no IPv4 "
                "address here",
                "name interfaces that exist and have an IPv4 address (`ip -4 addr`), or leave "
                "MCGW_MDNS_INTERFACES empty for all",
            )
    lan = sorted(
        {
            adapter.nice_name
            for adapter in adapters
            for ip in adapter.ips
            if isinstance(ip.ip, str) and not ip.ip.startswith("127.")
        }
    )
    if not lan:
        return Check(
            "mdns",
            Status.WARN,
            "no network interface with an IPv4 address besides loopback: phones cannot find "
            "the hub",
            "connect the hub to the LAN (Ethernet or Wi-Fi)",
        )
    if settings.api.host.startswith("127.") or settings.api.host in ("localhost", "::1"):
        return Check(
            "mdns",
            Status.WARN,
            f"the API listens on {settings.api.host} only: phones cannot reach the hub mDNS "
            "announces",
            "set MCGW_API__HOST=0.0.0.0, or turn mDNS off (MCGW_MDNS=false)",
        )
    problem = _join_mdns_group()
    if problem:
        return Check(
            "mdns",
            Status.WARN,
            f"cannot join the mDNS group {MDNS_GROUP}:{MDNS_PORT}: {problem}",
            "allow multicast on the LAN interface (in a container run with --net=host), or "
            "turn mDNS off (MCGW_MDNS=false) and give phones the hub's address",
        )
    return Check("mdns", Status.OK, f"multicast on {', '.join(lan)}")


def _join_mdns_group() -> str:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with contextlib.suppress(AttributeError, OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("", MDNS_PORT))
            membership = socket.inet_aton(MDNS_GROUP) + socket.inet_aton("0.0.0.0")  # noqa: S104 - any interface
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    except OSError as exc:
        return str(exc)
    return ""


# --- MQTT ------------------------------------------------------------------------------------


async def _mqtt(settings: Settings) -> Check:
    if not settings.mqtt.url:
        return Check("mqtt", Status.SKIP, "off (MCGW_MQTT__URL unset)")
    import aiomqtt

    from gateway.mqtt.connect import broker_address, make_client

    where = broker_address(settings.mqtt)
    client = make_client(settings.mqtt, identifier=f"mcgw-doctor-{uuid.uuid4().hex[:12]}")
    try:
        async with asyncio.timeout(MQTT_TIMEOUT_S), client:
            pass
    except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
        text = str(exc) or type(exc).__name__
        fix = (
            "check the user and password in MCGW_MQTT__URL against the broker's"
            if "auth" in text.lower()
            else "check that the broker runs (`systemctl status mosquitto`) and that "
            "MCGW_MQTT__URL names its host and port (and TLS settings for mqtts://)"
        )
        return Check(
            "mqtt", Status.FAIL, f"the broker at {where} refused or did not answer: {text}", fix
        )
    return Check("mqtt", Status.OK, f"the broker at {where} accepts this hub")
