"""Registrations that return their undo: the listener list and the closing mixin of the gateway.

:class:`Listeners` is the one way a part of the gateway lets others listen to it synchronously
(the telemetry hub's frames, the event bus's events, the access policy's changes).
``add(callback)`` returns the callable that removes exactly that registration (habluetooth
style: ``unsubscribe = hub.add_listener(...)``); callers keep it and call it, nobody removes a
listener by name or clears the list wholesale. ``notify(value)`` calls every listener in order
and isolates the notifier from their exceptions: a failure is counted and logged through the
owner's logger, and the others are still called. The list is copy-on-write, so a listener may
add or remove listeners (itself included) while it is being called; a change applies from the
next ``notify``.

:class:`ClosesOnExit` gives a resource with an idempotent ``close()`` the sync and async
context-manager protocol, so a subscription undoes itself at the end of a ``with`` block.

This module deliberately does not: queue, run tasks or await anything (listeners run inline,
inside ``notify``; async consumers use the owners' bounded subscriptions), or know what is
being published.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, Self, TypeVar

T = TypeVar("T")


class _Registration(Generic[T]):
    __slots__ = ("callback", "failing")

    def __init__(self, callback: Callable[[T], None]) -> None:
        self.callback = callback
        self.failing = False


class Listeners(Generic[T]):
    """Synchronous listeners of one publisher; see the module docstring.

    ``failed`` is the %-format of the error logged when a listener raises; its arguments are
    the listener and, with ``describe``, a short text about the value. With ``recovered`` (a
    %-format taking the listener) a listener that keeps failing is logged once until it
    succeeds again, and then its recovery once: for publishers that notify many times a second.
    """

    __slots__ = ("_describe", "_failed", "_log", "_recovered", "_registrations", "errors")

    def __init__(
        self,
        log: logging.Logger,
        failed: str,
        *,
        describe: Callable[[T], object] | None = None,
        recovered: str | None = None,
    ) -> None:
        self._log = log
        self._failed = failed
        self._describe = describe
        self._recovered = recovered
        self._registrations: tuple[_Registration[T], ...] = ()
        self.errors = 0
        """Listener calls that raised, since the list was built."""

    def __len__(self) -> int:
        return len(self._registrations)

    def add(self, callback: Callable[[T], None]) -> Callable[[], None]:
        """Call ``callback(value)`` on every ``notify``; returns its idempotent remover."""
        registration = _Registration(callback)
        self._registrations = (*self._registrations, registration)

        def remove() -> None:
            self._registrations = tuple(r for r in self._registrations if r is not registration)

        return remove

    def notify(self, value: T) -> None:
        """Call every listener with ``value``; one that raises is counted and logged."""
        for registration in self._registrations:
            try:
                registration.callback(value)
            except Exception:  # noqa: BLE001 - a listener must not break its publisher; logged below
                self.errors += 1
                if not (self._recovered and registration.failing):
                    registration.failing = True
                    args = () if self._describe is None else (self._describe(value),)
                    self._log.exception(self._failed, registration.callback, *args)
            else:
                if registration.failing:
                    registration.failing = False
                    if self._recovered:
                        self._log.info(self._recovered, registration.callback)


class ClosesOnExit:
    """Mixin: ``with x:`` and ``async with x:`` call ``x.close()`` on the way out."""

    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
