"""The BLE mode's text form: ``bluez:hciN`` names one BlueZ adapter, and its backends use it."""

from __future__ import annotations

import re

import pytest
from bleak import BleakScanner

from ble.backends import BleStack
from ble.mode import MAX_RADIOS, BleMode, BleModeKind, BleModes


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


# -- several radios ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "radios"),
    [
        ("sim:3", ["sim:3"]),
        ("bluez:hci0,bluez:hci1", ["bluez:hci0", "bluez:hci1"]),
        ("hci:usb:0, bluez", ["hci:usb:0", "bluez"]),
        (
            "hci:tcp-client:127.0.0.1:9100,hci:tcp-client:127.0.0.1:9100",
            ["hci:tcp-client:127.0.0.1:9100", "hci:tcp-client:127.0.0.1:9100"],
        ),
        # bumble's serial moniker keeps its speed after the comma
        ("hci:serial:/dev/ttyACM0,1000000,bluez", ["hci:serial:/dev/ttyACM0,1000000", "bluez"]),
    ],
)
def test_a_list_of_radios_is_parsed_in_order(text: str, radios: list[str]) -> None:
    modes = BleModes.parse(text)
    assert [str(mode) for mode in modes] == radios
    assert BleModes.parse(str(modes)) == modes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sim,sim", "sim cannot be combined"),
        ("sim:2,hci:usb:0", "sim cannot be combined"),
        ("bluez,auto", "BlueZ adapter default is listed twice"),
        ("bluez:hci1,hci:usb:0,bluez:hci1", "BlueZ adapter hci1 is listed twice"),
        ("hci:usb:0,,bluez", "an empty entry"),
        ("", "empty"),
        ("bluez:hci0,bogus", "radio 1 of 'bluez:hci0,bogus': unknown BLE mode 'bogus'"),
        (",".join(["hci:usb:0"] * (MAX_RADIOS + 1)), f"at most {MAX_RADIOS} radios"),
    ],
)
def test_a_bad_list_of_radios_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        BleModes.parse(text)


def test_a_single_bad_mode_keeps_its_own_message() -> None:
    with pytest.raises(ValueError, match=r"^unknown BLE mode 'bogus'"):
        BleModes.parse("bogus")
