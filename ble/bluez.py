"""bleak's own BlueZ backends bound to one BlueZ adapter, for the ``bluez:hciN`` mode.

``bluez`` alone leaves the adapter to BlueZ (its default one); ``bluez:hci1`` must scan and
connect through ``hci1`` whichever code asks. bleak takes the adapter as a per-call argument
(``bluez={"adapter": "hci1"}``); :func:`bluez_backends` gives backend classes that carry it, so
every ``BleakScanner(backend=...)`` / ``BleakClient(backend=...)`` of the hub uses it without
knowing. A device found by such a scanner carries its D-Bus path, so its client goes through
the same adapter by itself; the client's binding covers a connect by address alone.

Linux only, and bleak's BlueZ modules are imported only when the mode asks for them. It
deliberately does not talk to D-Bus itself or check that the adapter exists (``mcgw doctor``
does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bleak.backends.client import BaseBleakClient
    from bleak.backends.scanner import BaseBleakScanner

__all__ = ["bluez_backends"]


def bluez_backends(adapter: str) -> tuple[type[BaseBleakClient], type[BaseBleakScanner]]:
    """bleak's BlueZ client and scanner backends, both bound to ``adapter`` (``hci0``)."""
    from bleak.backends.bluezdbus.client import BleakClientBlueZDBus
    from bleak.backends.bluezdbus.scanner import BleakScannerBlueZDBus

    def bound_init(base: Any) -> Any:
        def __init__(self: Any, *args: Any, bluez: dict[str, Any] | None = None, **kw: Any) -> None:
            base.__init__(self, *args, bluez={**(bluez or {}), "adapter": adapter}, **kw)

        return __init__

    # The names stay bleak's: bleak reports a backend's class name as its backend id.
    client = type(
        BleakClientBlueZDBus.__name__,
        (BleakClientBlueZDBus,),
        {"__init__": bound_init(BleakClientBlueZDBus), "bound_adapter": adapter},
    )
    scanner = type(
        BleakScannerBlueZDBus.__name__,
        (BleakScannerBlueZDBus,),
        {"__init__": bound_init(BleakScannerBlueZDBus), "bound_adapter": adapter},
    )
    return client, scanner
