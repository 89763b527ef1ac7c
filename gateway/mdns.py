"""mDNS / DNS-SD advertisement of the hub, so phone apps find it without typing an address.

The hub is announced as ``<hub id>._mcgw._tcp.local.``: SRV and A records give the host and
the API port, and the TXT record carries ``txtvers`` (layout of this record, ``1``),
``version`` (the mcgw package version), ``api`` (the REST base path, ``/api/v1``) and
``hub_id``. An app browses for ``_mcgw._tcp.local.``, resolves one instance and calls
``http://<address>:<port><api>/health``. Two hubs with the same hub id (two Pis both called
``raspberrypi``) both stay visible: the second is renamed ``<hub id> (2)``, and its TXT
``hub_id`` still tells the truth.

This module only advertises: it browses for nothing and opens no HTTP. Discovery is a
convenience, so a host where multicast cannot be set up (an interface that does not exist, a
network without multicast) logs one warning and the hub runs on without it; phones can still
be given the address by hand. IPv4 only. Addresses are read once when advertising starts; a
hub that moves to another network re-announces when it restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import ipaddress
import logging
import re
import socket
import unicodedata
from collections.abc import Awaitable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import ifaddr
from zeroconf import Error as ZeroconfError
from zeroconf import InterfaceChoice, IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

if TYPE_CHECKING:
    from gateway.config import Settings

SERVICE_TYPE = "_mcgw._tcp.local."
API_PATH = "/api/v1"
TXT_LAYOUT_VERSION = "1"
"""Bumped when a TXT key changes meaning, so apps can tell old hubs from new ones."""
MAX_LABEL_BYTES = 63
"""A DNS label (an instance name or a host name) holds at most 63 bytes."""

_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - names, not binds
_NOT_HOSTNAME = re.compile(r"[^a-z0-9-]+")

log = logging.getLogger(__name__)


def package_version() -> str:
    """The installed mcgw version, or ``unknown`` when running from an uninstalled tree."""
    try:
        return importlib.metadata.version("mcgw")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode()[:limit]
    return encoded.decode(errors="ignore")


def instance_label(hub_id: str) -> str:
    """The DNS-SD instance name for a hub id: readable, with dots and control characters
    replaced (a dot would split the label), at most 63 bytes."""
    cleaned = "".join(
        "-" if ch == "." or unicodedata.category(ch).startswith("C") else ch
        for ch in unicodedata.normalize("NFC", hub_id)
    ).strip()
    return _truncate_utf8(cleaned, MAX_LABEL_BYTES) or "mcgw"


def host_label(hub_id: str) -> str:
    """The ``.local`` host name the SRV record points at: ``mcgw-<hub id as ASCII>``.

    Prefixed so it never claims the host's own name, which avahi may already publish with
    other addresses.
    """
    ascii_id = unicodedata.normalize("NFKD", hub_id).encode("ascii", "ignore").decode().lower()
    slug = _NOT_HOSTNAME.sub("-", ascii_id).strip("-")
    return f"mcgw-{slug}"[:MAX_LABEL_BYTES].rstrip("-") if slug else "mcgw"


def _ipv4(text: str) -> str | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return str(address) if isinstance(address, ipaddress.IPv4Address) else None


def _adapter_ipv4(adapter: ifaddr.Adapter) -> list[str]:
    return [ip.ip for ip in adapter.ips if isinstance(ip.ip, str)]


def _interface_addresses(entry: str, adapters: Iterable[ifaddr.Adapter]) -> list[str]:
    """The IPv4 addresses an interfaces entry (an address or a name) stands for on this host.

    An address this host does not have resolves to nothing: handed to zeroconf it would make
    it leak its listening socket.
    """
    local = [(adapter, _adapter_ipv4(adapter)) for adapter in adapters]
    if address := _ipv4(entry):
        return [address] if any(address in ips for _, ips in local) else []
    return [
        ip for adapter, ips in local if entry in (adapter.name, adapter.nice_name) for ip in ips
    ]


class MdnsAdvertiser:
    """Announces one hub on the local network until closed.

    ``interfaces`` lists IPv4 addresses or interface names (``"wlan0"``) to announce on; empty
    means every interface. ``host`` is the address the API listens on: a specific address is
    the only one advertised, a wildcard (``0.0.0.0``) advertises the interfaces' addresses.

    ``start()`` probes the network for name clashes before announcing, which takes about a
    second; run it as an owned background task if start-up must not wait for it. ``close()``
    sends the goodbye packets and may be called at any time, also while ``start()`` runs.
    """

    def __init__(
        self,
        *,
        hub_id: str,
        port: int,
        interfaces: Sequence[str] = (),
        host: str = "0.0.0.0",  # noqa: S104 - the API's default bind, see ApiSettings
        version: str | None = None,
    ) -> None:
        self.hub_id = hub_id
        self.port = port
        self.interfaces = tuple(interfaces)
        self.host = host
        self.version = version if version is not None else package_version()
        self._zeroconf: AsyncZeroconf | None = None
        self._info: ServiceInfo | None = None
        self._announcing: asyncio.Future[Any] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, interfaces: Sequence[str] = ()) -> Self:
        """An advertiser for the hub these settings describe."""
        return cls(
            hub_id=settings.hub_id,
            port=settings.api.port,
            host=settings.api.host,
            interfaces=interfaces,
        )

    @property
    def txt(self) -> dict[str, str]:
        """The TXT record's key/value pairs."""
        return {
            "txtvers": TXT_LAYOUT_VERSION,
            "version": self.version,
            "api": API_PATH,
            "hub_id": self.hub_id,
        }

    @property
    def advertising(self) -> bool:
        """True once the service is registered, until ``close()``."""
        return self._info is not None

    @property
    def service_name(self) -> str | None:
        """The full name registered (renamed on a clash), or None when not advertising."""
        return self._info.name if self._info is not None else None

    def _targets(self) -> tuple[list[str] | InterfaceChoice, list[str]]:
        """(where to listen and announce, which addresses to advertise), both IPv4."""
        adapters = list(ifaddr.get_adapters())
        if self.interfaces:
            bind: list[str] = []
            for entry in self.interfaces:
                found = _interface_addresses(entry, adapters)
                if not found:
                    log.warning(
                        "mDNS: this host has no interface named or addressed %r with an IPv4 "
                        "address; skipping it",
                        entry,
                    )
                bind.extend(found)
            advertised = list(dict.fromkeys(bind))
            targets: list[str] | InterfaceChoice = advertised
        else:
            everything = [ip for a in adapters for ip in _adapter_ipv4(a)]
            lan = [ip for ip in everything if not ipaddress.ip_address(ip).is_loopback]
            advertised = list(dict.fromkeys(lan or everything))
            targets = InterfaceChoice.All
        if self.host not in _WILDCARD_HOSTS and (address := _ipv4(self.host)):
            advertised = [address]
        return targets, advertised

    async def start(self) -> None:
        """Register the service; logs a warning and returns if the network does not allow it."""
        if self._zeroconf is not None:
            raise RuntimeError("MdnsAdvertiser.start() called twice; close() it first")
        targets, addresses = self._targets()
        if not addresses:
            log.warning(
                "mDNS advertisement off: none of the interfaces %s has an IPv4 address; "
                "set the mDNS interfaces to ones that do, or turn mDNS off",
                list(self.interfaces) or "(all)",
            )
            return
        info = ServiceInfo(
            SERVICE_TYPE,
            f"{instance_label(self.hub_id)}.{SERVICE_TYPE}",
            port=self.port,
            properties=self.txt,
            server=f"{host_label(self.hub_id)}.local.",
            addresses=[socket.inet_aton(address) for address in addresses],
        )
        try:
            zeroconf = AsyncZeroconf(interfaces=targets, ip_version=IPVersion.V4Only)
        except OSError as exc:
            log.warning(
                "mDNS advertisement off: cannot open multicast sockets on %s (%s); "
                "check the mDNS interfaces setting, or turn mDNS off to silence this",
                targets if isinstance(targets, list) else "all interfaces",
                exc,
            )
            return
        self._zeroconf = zeroconf
        try:
            announced: Awaitable[Any] = await zeroconf.async_register_service(
                info, allow_name_change=True
            )
        except (OSError, ZeroconfError) as exc:
            if self._zeroconf is zeroconf:  # not a close() racing this start()
                log.warning("mDNS advertisement off: registering %s failed (%s)", info.name, exc)
            await self.close()
            return
        if self._zeroconf is not zeroconf:
            return  # close() ran while the name was being probed
        self._announcing = asyncio.ensure_future(announced)
        self._info = info
        log.info("mDNS: advertising %s at %s port %d", info.name, ", ".join(addresses), self.port)

    async def close(self) -> None:
        """Say goodbye on the network and release the sockets. Safe to call more than once."""
        zeroconf, self._zeroconf = self._zeroconf, None
        announcing, self._announcing = self._announcing, None
        self._info = None
        if announcing is not None and not announcing.done():
            announcing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announcing
        if zeroconf is None:
            return
        try:
            await zeroconf.async_close()
        except (OSError, ZeroconfError) as exc:
            log.debug("mDNS: goodbye not sent cleanly (%s); sockets closed anyway", exc)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
