"""The BLE mode's text form: ``bluez:hciN`` names one BlueZ adapter, and its backends use it."""

from __future__ import annotations

import pytest
from bleak import BleakScanner

from ble.backends import BleStack
from ble.mode import BleMode, BleModeKind


@pytest.mark.parametrize("text", ["auto", "bluez", "bluez:hci0", "bluez:hci12", "sim:3"])
def test_modes_read_back_as_written(text: str) -> None:
    assert str(BleMode.parse(text)) == text


def test_bluez_adapter_is_parsed() -> None:
    mode = BleMode.parse("bluez:hci1")
    assert mode.kind is BleModeKind.BLUEZ
    assert mode.adapter == "hci1"
    assert not mode.uses_bumble


@pytest.mark.parametrize("text", ["bluez:", "bluez:usb0", "bluez:hci", "bluez:hci0x"])
def test_a_bad_adapter_name_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="like hci0"):
        BleMode.parse(text)


async def test_bluez_adapter_mode_binds_bleaks_own_backends_to_it() -> None:
    stack = await BleStack.open(BleMode.parse("bluez:hci1"), on_down=lambda: None, on_up=print)
    try:
        assert stack.backends.scanner is not None
        assert stack.backends.client is not None
        scanner = BleakScanner(backend=stack.backends.scanner)
        assert scanner._backend._adapter == "hci1"  # type: ignore[attr-defined]
        assert stack.backends.scanner.__name__ == "BleakScannerBlueZDBus"
    finally:
        await stack.close()
    bare = await BleStack.open(BleMode.parse("bluez"), on_down=lambda: None, on_up=print)
    assert bare.backends.scanner is None  # bleak picks its own, BlueZ's default adapter
    await bare.close()
