"""The exception tree of the ble package.

BleError
├── ProtocolError       a frame that is not valid Microcurrent GATT profile v1
├── LinkError           the link to one device failed (connect, bond, handshake, lost)
│   └── CommandRefused  the device answered a command with a NACK
└── RadioError          a transport or virtual radio could not be opened

Lower-level exceptions (bleak's, bumble's) are translated to these at the package boundary, so
callers in gateway/ handle one tree.
"""

from __future__ import annotations


class BleError(Exception):
    """Base of every error raised by the ble package."""


class ProtocolError(BleError):
    """Bytes that do not decode as a valid v1 frame, or a value that does not fit its field."""


class LinkError(BleError):
    """The link to a device failed; the message says what to try."""


class CommandRefused(LinkError):
    """The device answered a command with a NACK."""

    def __init__(self, opcode: str, status: str) -> None:
        super().__init__(f"device refused {opcode}: {status}")
        self.opcode = opcode
        self.status = status


class RadioError(BleError):
    """A radio transport could not be opened or has failed."""
