"""Living with bumble's host: a Host for transports that fail, and rules for awaiting bumble.

``TransportHost`` is the bumble ``Host`` the adapter (ble/bumble/adapter.py) puts on every real
transport (TCP to ``mcgw sim``, a USB or serial dongle): it turns a lost or hung transport into
one report to its owner instead of tracebacks, and drops controller answers that cannot belong
to the pending command. The functions are the cancellation rules every await on bumble follows
(and ``guarded``, the rule for every callback handed to bumble): bumble cancels pending
requests when a link or transport goes (that ``CancelledError`` is not the caller's), and its
``asyncio.wait_for`` (Python 3.11) can swallow the caller's own one.

It deliberately does not: open transports, keep state beyond one host, or log at more than
DEBUG (whoever owns the transport reports its loss, once).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any, ParamSpec

from bumble import hci
from bumble.host import Host
from bumble.transport.common import TransportLostError

__all__ = [
    "HCI_COMMAND_TIMEOUT_S",
    "TransportHost",
    "cancelled_by_peer",
    "cancels_requested",
    "guarded",
    "restore_swallowed_cancel",
]

log = logging.getLogger(__name__)

#: One HCI command round trip (scan enable, create-connection cancel, disconnect).
HCI_COMMAND_TIMEOUT_S = 5.0

_P = ParamSpec("_P")


def guarded(callback: Callable[_P, object], what: str) -> Callable[_P, None]:
    """Wrap ``callback`` so an exception is logged instead of escaping into bumble."""

    @functools.wraps(callback)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            callback(*args, **kwargs)
        except Exception:
            log.exception("%s raised; ignored so bumble keeps processing packets", what)

    return wrapper


class TransportHost(Host):
    """bumble's Host for a transport that can stall or go away (anything but the virtual radio).

    Stock behaviours are replaced where they raise, log a traceback or carry on in a broken
    state for events this gateway expects and handles (``ble.bumble.adapter.BumbleAdapter``):
    - on transport loss the stock host sets ``TransportLostError`` on the pending command, which
      bumble then logs at ERROR with a traceback; here the loss goes to the adapter, which
      releases the pending command by cancelling it and drops every link;
    - a command the controller has not answered within the device's ``command_timeout`` is
      abandoned by bumble, and its late answer is then taken as the answer to the next command;
      here it means the controller hung, and it is reported to the adapter as a lost transport;
    - a command answer that cannot belong to the pending command (another opcode, or a command
      already answered) would be set on the wrong future or raise ``InvalidStateError`` inside
      the packet handler; here it is dropped;
    - once the transport is given up, packets still arriving on it are ignored.
    """

    on_lost: Callable[[str], None] | None = None
    released = False
    """Set once the transport is given up: whatever still arrives on it is ignored."""

    def on_packet(self, packet: bytes) -> None:
        # After a hang is declared, the links are gone on this side; packets the controller
        # sends when it wakes up (a burst of stale data and events) would only reach handlers
        # that raise for unknown connection handles.
        if not self.released:
            super().on_packet(packet)

    def on_transport_lost(self) -> None:
        if self.on_lost is not None:
            self.on_lost("closed")
        else:
            self.release_everything()

    async def _send_command(
        self,
        command: hci.HCI_SyncCommand[Any] | hci.HCI_AsyncCommand,
        response_timeout: float | None = None,
    ) -> hci.HCI_Command_Complete_Event[Any] | hci.HCI_Command_Status_Event:
        # The one method every HCI command goes through (send_command, send_sync_command,
        # send_async_command).
        try:
            return await super()._send_command(command, response_timeout)
        except TimeoutError as exc:
            if self.on_lost is None or response_timeout is None:
                raise
            self.on_lost(f"hung: no answer to {command.name} within {response_timeout:g} s")
            # Not a TimeoutError: bumble's Device would log it as one more warning.
            raise TransportLostError(f"no answer to {command.name}") from exc

    def release_everything(self) -> None:
        """Release the pending command and every link, as if the controller had been reset."""
        self.released = True
        pending = self.pending_response
        if pending is not None and not pending.done():
            pending.cancel()
        # The Device's flush handler aborts pending connects and reports each link down.
        self.emit("flush")

    def on_command_processed(
        self, event: hci.HCI_Command_Complete_Event[Any] | hci.HCI_Command_Status_Event
    ) -> None:
        pending, command = self.pending_response, self.pending_command
        if pending is not None and (
            pending.done() or (command is not None and command.op_code != event.command_opcode)
        ):
            log.debug("dropped a late HCI answer (opcode 0x%04X)", event.command_opcode)
            return
        super().on_command_processed(event)


def cancels_requested() -> int:
    """How many cancellations of the current task are pending (0 outside a task)."""
    task = asyncio.current_task()
    return 0 if task is None else task.cancelling()


def restore_swallowed_cancel(cancels_before: int) -> None:
    """Raise ``CancelledError`` if the current task was cancelled but the await returned.

    bumble waits with ``asyncio.wait_for``, which in Python 3.11 returns a result that raced a
    cancellation and drops the cancellation; a task that then carries on cannot be stopped.
    """
    if cancels_requested() > cancels_before:
        raise asyncio.CancelledError


def cancelled_by_peer() -> bool:
    """True when bumble cancelled a pending request (link loss), not our own task."""
    task = asyncio.current_task()
    return task is None or task.cancelling() == 0
