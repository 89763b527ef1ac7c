"""The BLE mode: which stack the hub reaches its devices through, parsed once.

A mode is written as a string in settings, on the command line and in the environment::

    auto | bluez | bluez:hciN | sim | sim:N | hci:<bumble transport moniker>

``auto`` and ``bluez`` use bleak's own backend for the platform (BlueZ over D-Bus on Linux),
``bluez:hciN`` BlueZ's adapter ``hciN`` rather than its default one;
``sim[:N]`` an in-process virtual radio with N simulated devices (2 when N is left out);
``hci:<moniker>`` a bumble central on any bumble transport (``hci:tcp-client:127.0.0.1:9100``
to ``mcgw sim``, ``hci:usb:0``, ``hci:serial:/dev/ttyUSB0``). :meth:`BleMode.parse` is the one
parser; ``str(mode)`` writes it back. ble/backends.py opens the stack a mode names.

Several radios are a comma-separated list of modes, parsed by :meth:`BleModes.parse` (one mode
is a list of one): ``hci:tcp-client:127.0.0.1:9100,hci:tcp-client:127.0.0.1:9100`` (two HCI
connections to one ``mcgw sim``), ``bluez:hci0,bluez:hci1``, ``hci:usb:0,bluez``. After an
``hci:`` entry, a comma that does not start a new mode belongs to that entry (bumble's
``serial:/dev/ttyUSB0,1000000`` keeps its speed). Refused lists: ``sim`` beside anything (the
in-process virtual air has only its own devices, which no other radio could hear, so a second
radio there proves nothing; use ``mcgw sim`` with several ``hci:tcp-client:`` entries instead),
the same BlueZ adapter twice (``auto``/``bluez`` count as BlueZ's default adapter: two entries
would share one adapter's slots), and more than ``MAX_RADIOS`` entries. The same ``hci:``
moniker twice is allowed: each entry opens its own transport (two TCP clients of ``mcgw sim``
get two controllers).

Pure: this module opens nothing and imports neither bleak nor bumble.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "DEFAULT_SIM_DEVICES",
    "MAX_RADIOS",
    "MAX_SIM_DEVICES",
    "BleMode",
    "BleModeKind",
    "BleModes",
]

DEFAULT_SIM_DEVICES = 2
"""Simulated devices of a bare ``sim``."""
MAX_SIM_DEVICES = 50
MAX_RADIOS = 8
"""Radios in one ``--ble`` list (a USB hub holds a handful of dongles)."""


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


@dataclass(frozen=True, slots=True)
class BleModes:
    """The hub's radios, in ``--ble`` list order. Build it with :meth:`parse`; ``str()`` gives
    the canonical comma-separated text. A single mode is a list of one."""

    modes: tuple[BleMode, ...]

    @classmethod
    def parse(cls, text: str) -> BleModes:
        """The radios ``text`` lists; ValueError saying which entry is wrong and why."""
        entries = _split(text)
        if not entries:
            raise ValueError("the BLE mode is empty: give auto, bluez[:hciN], sim[:N] or hci:...")
        if len(entries) > MAX_RADIOS:
            raise ValueError(f"at most {MAX_RADIOS} radios, got {len(entries)}")
        modes = []
        for number, entry in enumerate(entries):
            try:
                modes.append(BleMode.parse(entry))
            except ValueError as exc:
                if len(entries) == 1:
                    raise
                raise ValueError(f"radio {number} of {text!r}: {exc}") from None
        return cls.of(*modes)

    @classmethod
    def of(cls, *modes: BleMode) -> BleModes:
        """The list of ``modes``, checked as :meth:`parse` checks it."""
        if len(modes) > 1:
            if any(mode.kind is BleModeKind.SIM for mode in modes):
                raise ValueError(
                    "sim cannot be combined with other radios (its virtual air holds only its "
                    "own devices); for several radios on simulated devices run `mcgw sim` and "
                    "list hci:tcp-client:HOST:PORT once per radio"
                )
            adapters = [mode.adapter or "default" for mode in modes if not mode.uses_bumble]
            twice = sorted({a for a in adapters if adapters.count(a) > 1})
            if twice:
                raise ValueError(
                    f"BlueZ adapter {twice[0]} is listed twice (auto and bluez both mean the "
                    "default adapter); list each adapter once"
                )
        return cls(tuple(modes))

    @property
    def first(self) -> BleMode:
        return self.modes[0]

    @property
    def uses_bumble(self) -> bool:
        """True when every radio is a bumble central (no BlueZ needed on the host)."""
        return all(mode.uses_bumble for mode in self.modes)

    def __iter__(self) -> Iterator[BleMode]:
        return iter(self.modes)

    def __len__(self) -> int:
        return len(self.modes)

    def __str__(self) -> str:
        return ",".join(str(mode) for mode in self.modes)


_MODE_STARTS = ("auto", "bluez", "sim", "hci:")


def _split(text: str) -> list[str]:
    """Comma-separated entries; after an ``hci:`` entry, a piece that starts no mode is glued
    back to it (a bumble moniker's own comma)."""
    entries: list[str] = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece:
            raise ValueError(f"an empty entry in the radio list {text!r}")
        if entries and entries[-1].startswith("hci:") and not piece.startswith(_MODE_STARTS):
            entries[-1] += "," + piece
        elif piece:
            entries.append(piece)
    return entries


def _is_adapter_name(text: str) -> bool:
    return text.startswith("hci") and text[3:].isdigit()
