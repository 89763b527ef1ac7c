"""The states a session and a device can be in: one definition for the domain, storage and API.

``SessionState`` is what ``gateway.sessions`` drives, what ``gateway.storage`` stores in
``sessions.state`` and what the API shows and filters on; ``DeviceState`` is the connection
state ``gateway.devices`` keeps per device and publishes on the event bus. Both are
``StrEnum``: a member equals its string value, so JSON, database rows and OpenAPI enums carry
the same text as before they were enums.

This module sits below the domain and storage alike (it imports nothing of the project), so
both can use it without a cycle. It holds values only: which transitions are allowed is the
session manager's business, not this module's.
"""

from __future__ import annotations

import enum


class SessionState(enum.StrEnum):
    """A session's state: ``pending -> running <-> paused -> completed | stopped | failed |
    interrupted``."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


OPEN_STATES = frozenset({SessionState.PENDING, SessionState.RUNNING, SessionState.PAUSED})
"""A session in one of these has not ended."""
TERMINAL_STATES = frozenset(SessionState) - OPEN_STATES
"""A session in one of these has ended; it never leaves it."""


class DeviceState(enum.StrEnum):
    """A managed device's connection state, as ``DeviceManager`` publishes it."""

    DISCOVERED = "discovered"
    """Heard in a scan, not (yet) looked after."""
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BONDED = "bonded"
    """Connected, bonded and handshaken: ready for a session."""
    LOST = "lost"
    """The link dropped or a connect failed; the manager retries with backoff."""
    FORGOTTEN = "forgotten"
    """No longer looked after (published once, as the device is dropped)."""
