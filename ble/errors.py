"""The exception tree of the ble package, and the one translator into it.

BleError
├── ProtocolError       a frame that is not valid Microcurrent GATT profile v1
├── LinkError           the link to one device failed (connect, bond, handshake, lost)
│   └── CommandRefused  the device answered a command with a NACK
└── RadioError          a transport or virtual radio could not be opened

Lower-level exceptions (bleak's ``BleakError``, bumble's ``BaseBumbleError`` and ``ATT_Error``,
``TimeoutError``, ``OSError``) are translated to these at the package boundary by
:func:`translate`, so callers in gateway/ handle one tree: the link (ble/link.py) translates
what bleak raises, the bumble adapter (ble/bumble/adapter.py) what bumble raises. The one
translation the other way is deliberate: the bumble bleak backend (ble/bumble/client.py)
raises bleak's errors to bleak, because that is the contract of a bleak backend.

This module imports neither bleak nor bumble (the codec imports it and stays pure), so the
translator takes the failure as it is and the caller says which branch of the tree it is.
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


def describe(exc: BaseException) -> str:
    """An exception as text that is never empty (``str(TimeoutError())`` is "")."""
    return str(exc) or type(exc).__name__


def translate(
    exc: BaseException, what: str, *, into: type[BleError] = LinkError, advice: str = ""
) -> BleError:
    """The error of this tree to raise ``from exc`` for a lower-level failure of ``what``.

    ``what`` says what failed ("could not connect to AA:BB:..."), ``into`` which branch it is
    (a device's link by default, ``RadioError`` for a transport) and ``advice`` what to try;
    the text reads ``"<what>: <exc><advice>"``.
    """
    return into(f"{what}: {describe(exc)}{advice}")
