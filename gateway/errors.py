"""The exception tree of the gateway package.

GatewayError
├── NotFound              a device, session or program that does not exist (for this caller)
├── Conflict              the request clashes with current state (device busy, session ended)
├── Forbidden             the caller may watch but not control, or lacks consent (S7, S8)
├── InvalidProgram        a program breaks a cap, range or the session-length cap; names step+field
├── DeviceUnavailable     the device is not connected or refused the command
├── SafetyViolation       bytes about to go on air break an invariant; they were not sent
├── BluetoothUnavailable  no usable Bluetooth stack for the configured BLE mode
├── StorageUnavailable    the database could not be reached or refused a write
├── JournalUnavailable    a record could not be made durable (gateway/storage/journal.py)
└── InvalidSettings       the configuration cannot start a hub (gateway/config.py)

The last two live next to the one place that raises them and whose data they describe (the
journal file, the settings sources). api/ maps each class to one HTTP status in one place.
Errors from ble/ are translated here with ``raise X(...) from exc`` so callers handle one tree.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error raised by the gateway package."""


class NotFound(GatewayError):
    pass


class Conflict(GatewayError):
    pass


class Forbidden(GatewayError):
    pass


class InvalidProgram(GatewayError):
    """A program that must not run. ``problems`` lists (location, reason) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        text = "; ".join(f"{where}: {why}" for where, why in problems)
        super().__init__(f"program refused: {text}")


class DeviceUnavailable(GatewayError):
    pass


class SafetyViolation(GatewayError):
    pass


class BluetoothUnavailable(GatewayError):
    """No usable Bluetooth stack; the message says how to fix it or to use --ble sim."""


class StorageUnavailable(GatewayError):
    """The database could not be reached or refused a write; the text says which and why."""
