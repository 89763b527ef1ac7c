"""The BLE mode: which stack the hub reaches its devices through, parsed once.

A mode is written as a string in settings, on the command line and in the environment::

    auto | bluez | bluez:hciN | sim | sim:N | hci:<bumble transport moniker>

``auto`` and ``bluez`` use bleak's own backend for the platform (BlueZ over D-Bus on Linux),
``bluez:hciN`` BlueZ's adapter ``hciN`` rather than its default one;
``sim[:N]`` an in-process virtual radio with N simulated devices (2 when N is left out);
``hci:<moniker>`` a bumble central on any bumble transport (``hci:tcp-client:127.0.0.1:9100``
to ``mcgw sim``, ``hci:usb:0``, ``hci:serial:/dev/ttyUSB0``). :meth:`BleMode.parse` is the one
parser; ``str(mode)`` writes it back. ble/backends.py opens the stack a mode names.

Pure: this module opens nothing and imports neither bleak nor bumble.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["DEFAULT_SIM_DEVICES", "MAX_SIM_DEVICES", "BleMode", "BleModeKind"]

DEFAULT_SIM_DEVICES = 2
"""Simulated devices of a bare ``sim``."""
MAX_SIM_DEVICES = 50


class BleModeKind(StrEnum):
    """Which stack: bleak's platform backend, the in-process simulator, or a bumble transport."""

    AUTO = "auto"
    BLUEZ = "bluez"
    SIM = "sim"
    HCI = "hci"


@dataclass(frozen=True, slots=True)
class BleMode:
    """A parsed BLE mode. Build it with :meth:`parse`; ``str()`` gives its canonical text."""

    kind: BleModeKind
    sim_devices: int = 0
    """Simulated devices in the hub process (``sim`` only; 0 otherwise)."""
    transport: str = ""
    """The bumble transport moniker (``hci`` only; empty otherwise)."""
    adapter: str = ""
    """BlueZ's adapter (``bluez:hciN`` only; empty: BlueZ's default adapter)."""

    @classmethod
    def parse(cls, text: str) -> BleMode:
        """The mode ``text`` names; ValueError saying what is accepted otherwise."""
        if text in (BleModeKind.AUTO, BleModeKind.BLUEZ):
            return cls(BleModeKind(text))
        if text.startswith("bluez:"):
            adapter = text[len("bluez:") :]
            if not _is_adapter_name(adapter):
                raise ValueError(
                    f"bluez:hciN needs a BlueZ adapter name like hci0, got {adapter!r}"
                )
            return cls(BleModeKind.BLUEZ, adapter=adapter)
        if text == BleModeKind.SIM or text.startswith("sim:"):
            count = text.partition(":")[2] or str(DEFAULT_SIM_DEVICES)
            if not count.isdigit() or not 1 <= int(count) <= MAX_SIM_DEVICES:
                raise ValueError(f"sim:N needs N between 1 and {MAX_SIM_DEVICES}, got {count!r}")
            return cls(BleModeKind.SIM, sim_devices=int(count))
        if text.startswith("hci:") and len(text) > len("hci:"):
            return cls(BleModeKind.HCI, transport=text[len("hci:") :])
        raise ValueError(
            f"unknown BLE mode {text!r}: use auto, bluez[:hciN], sim[:N] or hci:<bumble transport>"
        )

    @property
    def uses_bumble(self) -> bool:
        """True for the modes whose central is a bumble adapter (``sim`` and ``hci``)."""
        return self.kind in (BleModeKind.SIM, BleModeKind.HCI)

    def __str__(self) -> str:
        if self.kind is BleModeKind.SIM:
            return f"sim:{self.sim_devices}"
        if self.kind is BleModeKind.HCI:
            return f"hci:{self.transport}"
        if self.adapter:
            return f"{self.kind.value}:{self.adapter}"
        return self.kind.value


def _is_adapter_name(text: str) -> bool:
    return text.startswith("hci") and text[3:].isdigit()
