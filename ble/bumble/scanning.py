"""Advertisement fan-out: one bumble central's advertisements to any number of listeners.

The controller scans while at least one listener is registered, actively if any listener asked
for it, and with duplicates passed through (a controller-side filter would hide advertisement
data changes; each scanner filters for itself). Every address heard is remembered with its type
(public or random), so a peer given as a string can be connected to.

Part of the bumble adapter (ble/bumble/adapter.py), which owns the ``Device``, the transport and
the bounded waits this uses. It deliberately does not open or close anything, nor filter,
decode or deduplicate advertisements (the bleak scanner backend does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bumble import core, hci
from bumble.device import Advertisement, Device

from ble.bumble.host import HCI_COMMAND_TIMEOUT_S, guarded
from ble.errors import LinkError, RadioError, translate

__all__ = ["AdvertisementListener", "Scanning"]

AdvertisementListener = Callable[[Advertisement], None]
#: Typed addresses remembered from advertisements (busy real-world air has many random ones).
_ADDRESS_CACHE_SIZE = 1024


class Scanning:
    """The scanning side of one adapter's ``Device``."""

    def __init__(
        self,
        device: Device,
        *,
        moniker: str,
        bounded: Callable[[Awaitable[None], float, str], Awaitable[None]],
        check_open: Callable[[], None],
        is_open: Callable[[], bool],
    ) -> None:
        self._device = device
        self._moniker = moniker
        self._bounded = bounded
        self._check_open = check_open
        self._is_open = is_open
        self._lock = asyncio.Lock()
        self._listeners: dict[object, tuple[AdvertisementListener, bool]] = {}
        self._active: bool | None = None
        self._address_types: dict[str, hci.Address] = {}
        device.on(Device.EVENT_ADVERTISEMENT, guarded(self._on_advertisement, "advertisement"))

    def clear(self) -> None:
        """Forget every listener (the adapter is closing; it stops the scan itself)."""
        self._listeners.clear()

    async def add_listener(
        self, listener: AdvertisementListener, *, active: bool
    ) -> Callable[[], Awaitable[None]]:
        """Deliver every advertisement to ``listener`` until the returned callable is awaited."""
        token = object()
        self._listeners[token] = (guarded(listener, "advertisement listener"), active)
        try:
            await self._update()
        except BaseException:
            self._listeners.pop(token, None)
            raise

        async def remove() -> None:
            if self._listeners.pop(token, None) is not None and self._is_open():
                await self._update()

        return remove

    async def _update(self) -> None:
        async with self._lock:
            wanted: bool | None = None
            if self._listeners:
                wanted = any(active for _, active in self._listeners.values())
            if wanted == self._active:
                return
            self._check_open()
            try:
                if self._active is not None:
                    await self._bounded(
                        self._device.stop_scanning(), HCI_COMMAND_TIMEOUT_S, "stopping the scan"
                    )
                    self._active = None
                if wanted is not None:
                    await self._bounded(
                        self._device.start_scanning(active=wanted, filter_duplicates=False),
                        HCI_COMMAND_TIMEOUT_S,
                        "starting the scan",
                    )
                    self._active = wanted
            except TimeoutError as exc:
                raise RadioError(
                    f"cannot change scanning on {self._moniker}: the controller did not answer "
                    f"within {HCI_COMMAND_TIMEOUT_S:g} s"
                ) from exc
            except (core.BaseBumbleError, LinkError) as exc:
                raise translate(
                    exc, f"cannot change scanning on {self._moniker}", into=RadioError
                ) from exc

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        address = advertisement.address
        key = str(address.to_string(False))
        self._address_types.pop(key, None)
        self._address_types[key] = address
        if len(self._address_types) > _ADDRESS_CACHE_SIZE:
            del self._address_types[next(iter(self._address_types))]
        for listener, _ in list(self._listeners.values()):
            listener(advertisement)

    async def resolve_address(self, address: str, *, timeout_s: float) -> hci.Address:
        """The typed address of a peer given as a string, scanning if needed (TimeoutError)."""
        key = address.upper()
        if (known := self._address_types.get(key)) is not None:
            return known
        heard: asyncio.Future[hci.Address] = asyncio.get_running_loop().create_future()

        def on_advertisement(advertisement: Advertisement) -> None:
            if not heard.done() and advertisement.address.to_string(False) == key:
                heard.set_result(advertisement.address)

        self._check_open()
        remove = await self.add_listener(on_advertisement, active=False)
        try:
            async with asyncio.timeout(timeout_s):
                return await heard
        finally:
            await remove()
