"""The hub's mDNS advertisement, observed by a real zeroconf browser over loopback.

Every socket here is bound to 127.0.0.1 only (``interfaces=["127.0.0.1"]``, IPv4): the
loopback device has no MULTICAST flag in some sandboxes, yet Linux still loops multicast
back to local listeners, so a second zeroconf instance in the same process sees the
announcements and nothing leaves the machine. Each test uses its own hub id, so a late
goodbye from another test (or another run) never matches. Waits are bounded by timeouts,
never asserted on.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from gateway.config import ApiSettings, BleSettings, Settings
from gateway.mdns import (
    API_PATH,
    SERVICE_TYPE,
    MdnsAdvertiser,
    host_label,
    instance_label,
    package_version,
)
from gateway.runtime import Runtime

LOOPBACK = "127.0.0.1"
WAIT_S = 10.0
"""Upper bound for one network observation; it normally takes about a second (probing)."""
RESOLVE_MS = 3000


@dataclass
class Browser:
    """A zeroconf browser on loopback that queues every (state change, name) it sees."""

    zeroconf: AsyncZeroconf
    events: asyncio.Queue[tuple[ServiceStateChange, str]] = field(default_factory=asyncio.Queue)

    async def wait_for(self, change: ServiceStateChange, name: str) -> None:
        async with asyncio.timeout(WAIT_S):
            while (await self.events.get()) != (change, name):
                pass

    async def resolve(self, name: str) -> AsyncServiceInfo:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        assert await info.async_request(self.zeroconf.zeroconf, RESOLVE_MS), f"{name} not resolved"
        return info


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    zeroconf = AsyncZeroconf(interfaces=[LOOPBACK], ip_version=IPVersion.V4Only)
    watcher = Browser(zeroconf)

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        watcher.events.put_nowait((state_change, name))

    service_browser = AsyncServiceBrowser(zeroconf.zeroconf, SERVICE_TYPE, handlers=[on_change])
    try:
        yield watcher
    finally:
        await service_browser.async_cancel()
        await zeroconf.async_close()


@pytest.fixture
def hub_id() -> str:
    return f"mcgw-test-{uuid.uuid4().hex[:8]}"


def txt(info: AsyncServiceInfo) -> dict[str, str]:
    return {
        key.decode(): value.decode() for key, value in info.properties.items() if value is not None
    }


async def test_browser_sees_port_address_and_txt(browser: Browser, hub_id: str) -> None:
    async with MdnsAdvertiser(
        hub_id=hub_id, port=18420, interfaces=[LOOPBACK], version="9.9.9"
    ) as advertiser:
        assert advertiser.advertising
        name = f"{hub_id}.{SERVICE_TYPE}"
        assert advertiser.service_name == name
        await browser.wait_for(ServiceStateChange.Added, name)
        info = await browser.resolve(name)
        with pytest.raises(RuntimeError, match="called twice"):
            await advertiser.start()

    assert info.port == 18420
    assert info.parsed_addresses() == [LOOPBACK]
    assert info.server == f"{host_label(hub_id)}.local."
    assert txt(info) == {"txtvers": "1", "version": "9.9.9", "api": API_PATH, "hub_id": hub_id}


async def test_close_says_goodbye(browser: Browser, hub_id: str) -> None:
    advertiser = MdnsAdvertiser(hub_id=hub_id, port=18421, interfaces=[LOOPBACK])
    await advertiser.start()
    name = f"{hub_id}.{SERVICE_TYPE}"
    await browser.wait_for(ServiceStateChange.Added, name)

    await advertiser.close()

    assert not advertiser.advertising
    await browser.wait_for(ServiceStateChange.Removed, name)
    await advertiser.close()  # idempotent


async def test_same_hub_id_twice_both_stay_visible(browser: Browser, hub_id: str) -> None:
    first = MdnsAdvertiser(hub_id=hub_id, port=18422, interfaces=[LOOPBACK])
    second = MdnsAdvertiser(hub_id=hub_id, port=18423, interfaces=[LOOPBACK])
    async with first, second:
        assert first.service_name == f"{hub_id}.{SERVICE_TYPE}"
        assert second.service_name is not None
        assert second.service_name != first.service_name
        await browser.wait_for(ServiceStateChange.Added, second.service_name)
        renamed = await browser.resolve(second.service_name)
        original = await browser.resolve(first.service_name)

    assert (original.port, renamed.port) == (18422, 18423)
    assert txt(renamed)["hub_id"] == hub_id


async def test_interface_by_name_and_api_host(browser: Browser, hub_id: str) -> None:
    settings = Settings(hub_id=hub_id, api={"host": LOOPBACK, "port": 18424})
    advertiser = MdnsAdvertiser.from_settings(settings, interfaces=["lo"])
    async with advertiser:
        name = f"{hub_id}.{SERVICE_TYPE}"
        await browser.wait_for(ServiceStateChange.Added, name)
        info = await browser.resolve(name)

    assert (info.parsed_addresses(), info.port) == ([LOOPBACK], 18424)
    assert txt(info)["version"] == package_version()


async def test_sockets_that_cannot_open_warn_and_hub_runs_on(
    hub_id: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_multicast(**kwargs: object) -> AsyncZeroconf:
        raise OSError(19, "No such device")

    monkeypatch.setattr("gateway.mdns.AsyncZeroconf", no_multicast)
    caplog.set_level(logging.WARNING, logger="gateway.mdns")
    advertiser = MdnsAdvertiser(hub_id=hub_id, port=18425, interfaces=[LOOPBACK])

    await advertiser.start()

    assert not advertiser.advertising
    assert "cannot open multicast sockets" in caplog.text
    await advertiser.close()


@pytest.mark.parametrize("entry", ["no-such-if0", "203.0.113.7"])
async def test_interface_not_on_this_host_warns(
    entry: str, hub_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    # 203.0.113.0/24 is TEST-NET-3, never an address of this host: it is refused before any
    # socket opens.
    caplog.set_level(logging.WARNING, logger="gateway.mdns")
    advertiser = MdnsAdvertiser(hub_id=hub_id, port=18426, interfaces=[entry])

    await advertiser.start()

    assert not advertiser.advertising
    assert f"no interface named or addressed {entry!r}" in caplog.text
    assert "none of the interfaces" in caplog.text


async def test_close_while_probing_leaves_nothing_behind(browser: Browser, hub_id: str) -> None:
    advertiser = MdnsAdvertiser(hub_id=hub_id, port=18428, interfaces=[LOOPBACK])
    starting = asyncio.create_task(advertiser.start())
    await asyncio.sleep(0)  # let start() open its sockets and begin probing

    starting.cancel()
    await asyncio.gather(starting, return_exceptions=True)
    await advertiser.close()

    assert not advertiser.advertising
    assert (
        await AsyncServiceInfo(SERVICE_TYPE, f"{hub_id}.{SERVICE_TYPE}").async_request(
            browser.zeroconf.zeroconf, 500
        )
        is False
    )


async def test_close_racing_start_wins(browser: Browser, hub_id: str) -> None:
    # The runtime may run start() as a background task and call close() on shutdown before
    # probing has finished: close() must win, and start() must neither raise nor re-register.
    advertiser = MdnsAdvertiser(hub_id=hub_id, port=18429, interfaces=[LOOPBACK])
    starting = asyncio.create_task(advertiser.start())
    await asyncio.sleep(0.1)  # inside the ~1 s probe

    await advertiser.close()
    await starting

    assert not advertiser.advertising
    assert (
        await AsyncServiceInfo(SERVICE_TYPE, f"{hub_id}.{SERVICE_TYPE}").async_request(
            browser.zeroconf.zeroconf, 500
        )
        is False
    )


@pytest.mark.parametrize(
    ("hub_id", "instance", "host"),
    [
        ("raspberrypi", "raspberrypi", "mcgw-raspberrypi"),
        ("pi.lan", "pi-lan", "mcgw-pi-lan"),
        ("Salon Élodie", "Salon Élodie", "mcgw-salon-elodie"),
        ("x" * 64, "x" * 63, "mcgw-" + "x" * 58),
        ("...", "---", "mcgw"),
    ],
)
def test_names_are_valid_dns_labels(hub_id: str, instance: str, host: str) -> None:
    assert instance_label(hub_id) == instance
    assert host_label(hub_id) == host
    assert len(instance_label(hub_id).encode()) <= 63
    assert len(host_label(hub_id)) <= 63


def test_long_unicode_hub_id_is_cut_on_a_character_boundary() -> None:
    label = instance_label("é" * 40)
    assert label == "é" * 31
    assert len(label.encode()) == 62


async def test_the_runtime_announces_while_it_runs_and_withdraws_on_stop(
    browser: Browser, hub_id: str
) -> None:
    # The runtime owns the advertiser (not the web app), so every way of running a hub
    # announces it, and stopping the hub says goodbye before the radio closes.
    settings = Settings(
        hub_id=hub_id,
        ble=BleSettings(mode="sim:1"),
        api=ApiSettings(port=18424),
        mdns=True,
        mdns_interfaces=[LOOPBACK],
    )
    name = f"{hub_id}.{SERVICE_TYPE}"
    async with Runtime(settings, storage=False) as runtime:
        await browser.wait_for(ServiceStateChange.Added, name)
        info = await browser.resolve(name)
        assert runtime.mdns is not None
        assert runtime.mdns.advertising
    assert info.port == 18424
    assert txt(info)["hub_id"] == hub_id
    assert runtime.mdns is None
    await browser.wait_for(ServiceStateChange.Removed, name)
