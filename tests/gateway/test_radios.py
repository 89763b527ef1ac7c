"""Placement and slot counts of several radios (gateway/radios.py), and their settings."""

from __future__ import annotations

import pytest
from bleak.backends.device import BLEDevice

from gateway.config import BleSettings, InvalidSettings, load_settings
from gateway.radios import ADVERT_WINDOW_S, Radio, forget_unheard, place

DEVICE = "C0:00:00:00:40:01"


def radio(name: str, slots: int = 7, mode: str = "hci:usb:0") -> Radio:
    return Radio(name, mode, slots)


def hear(on: Radio, rssi: int, address: str = DEVICE) -> None:
    on.hear(BLEDevice(address, "mc", {"seen by": on.name}), rssi)


def test_the_radio_that_hears_the_device_loudest_is_chosen_and_its_slot_taken() -> None:
    a, b = radio("radio0"), radio("radio1")
    hear(a, -80)
    hear(b, -45)
    chosen = place([a, b], DEVICE.lower())
    assert chosen is b
    assert (b.used, b.connect_attempts, a.used) == (1, 1, 0)
    assert b.device_for(DEVICE, BLEDevice(DEVICE, "mc", None), "mc").details == {
        "seen by": "radio1"
    }


def test_a_full_radio_overflows_to_the_next_and_none_free_gives_none() -> None:
    a, b = radio("radio0", slots=1), radio("radio1", slots=1)
    hear(a, -40)
    hear(b, -90)
    assert place([a, b], DEVICE) is a
    assert place([a, b], DEVICE) is b
    assert place([a, b], DEVICE) is None
    a.release()
    assert place([a, b], DEVICE) is a
    assert (a.free, b.free) == (0, 0)


def test_a_radio_that_is_down_or_failed_last_time_is_not_preferred() -> None:
    a, b = radio("radio0"), radio("radio1")
    hear(a, -40)
    hear(b, -90)
    a.up = False
    assert place([a, b], DEVICE) is b
    a.up = True
    assert place([a, b], DEVICE, avoid=a) is b
    assert place([a], DEVICE, avoid=a) is a  # the only one left is still tried


def test_a_radio_that_never_heard_the_device_comes_last_and_connects_by_address() -> None:
    a, b, c = radio("radio0"), radio("radio1"), radio("radio2", mode="bluez:hci2")
    hear(b, -95)
    assert place([a, b], DEVICE) is b
    fallback = BLEDevice(DEVICE, "mc", {"seen by": "radio1"})
    assert a.device_for(DEVICE, fallback, "mc").details is None  # bumble: its own adapter
    assert c.device_for(DEVICE, fallback, "mc") is fallback  # BlueZ: what was seen


def test_a_radio_that_stops_hearing_a_device_others_hear_forgets_it_after_the_scan() -> None:
    a, b, down = radio("radio0"), radio("radio1"), radio("radio2")
    hear(a, -40)
    hear(b, -90)
    hear(down, -30)
    assert place([a, b], DEVICE) is a
    a.release()
    # a went deaf: in the next round only b hears the device; down did not scan at all.
    forget_unheard({a: set(), b: {DEVICE.lower()}})
    assert DEVICE not in a.heard
    assert DEVICE in b.heard
    assert DEVICE in down.heard
    assert place([a, b], DEVICE) is b


def test_a_device_no_radio_hears_keeps_its_readings() -> None:
    a, b = radio("radio0"), radio("radio1")
    hear(a, -40)
    hear(b, -90)
    forget_unheard({a: set(), b: set()})  # connected (not advertising) or away
    assert set(a.heard) == set(b.heard) == {DEVICE}
    assert place([a, b], DEVICE) is a


def test_adverts_per_second_average_over_the_window() -> None:
    a = radio("radio0")
    for n in range(10):
        a.hear(BLEDevice(DEVICE, "mc", None), -50, now=100.0 + n * 0.1)
    assert a.adverts_per_s(now=101.0) == 10 / ADVERT_WINDOW_S
    assert a.adverts_per_s(now=100.0 + ADVERT_WINDOW_S + 0.95) == 0


def test_each_radio_has_the_default_slots_or_its_own() -> None:
    both = BleSettings.model_validate({"mode": "bluez:hci0,bluez:hci1", "connection_slots": 5})
    assert [both.slots_for(0), both.slots_for(1)] == [5, 5]
    own = load_settings(**{"ble.mode": "bluez:hci0,bluez:hci1", "ble.radio_slots": "7,1"})
    assert [own.ble.slots_for(0), own.ble.slots_for(1)] == [7, 1]
    assert str(own.ble.mode) == "bluez:hci0,bluez:hci1"


@pytest.mark.parametrize(
    ("slots", "message"),
    [("7", "gives 1 number"), ("7,x", "whole numbers"), ("7,0", "greater than or equal to 1")],
)
def test_bad_per_radio_slots_are_refused(slots: str, message: str) -> None:
    with pytest.raises(InvalidSettings, match=message):
        load_settings(**{"ble.mode": "bluez:hci0,bluez:hci1", "ble.radio_slots": slots})
