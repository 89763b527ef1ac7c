"""Who may see and who may control: the one access policy of a hub.

Every decision of the form "may this user see (or control) this device, this session, this
telemetry frame, this event" is made here, by :class:`AccessPolicy`, and asked by every REST
route, every WebSocket message, every outgoing frame and event, and the replay ring. No route or
handler decides visibility on its own.

The rules (docs/api.md, "Ownership"):

* a device claimed by a user is seen and controlled by that user and by admins; an unclaimed
  device is seen by everyone (so it can be claimed) and controlled by nobody until claimed;
* a session is seen and controlled by its owner and by admins, and by nobody else;
* a telemetry frame is seen by whoever may see its device and, when the frame belongs to a
  session, that session; an event likewise; a plan's event by its owner and admins;
* a revoked token is nobody, at once.

Decisions are made from an in-memory :class:`AccessSnapshot` (users, live tokens, this hub's
device owners), so authenticating a request is one keyed hash and a dictionary lookup: no
database round trip and no write on a control path (S3). The runtime loads the snapshot from
storage at start, reloads it right after a change made through this hub and within its poll
interval after a change made elsewhere (``gateway.storage.access``), and calls :meth:`replace`;
listeners (open WebSocket connections, the replay ring) are told what changed.

This module does no I/O, starts no task and knows nothing of HTTP.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from gateway.events import (
    DeviceStateChanged,
    Event,
    PlanEvent,
    SessionNotice,
    SessionStateChanged,
)
from gateway.listeners import Listeners

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated user behind one token, as the snapshot knows them now."""

    user_id: int
    name: str
    is_admin: bool
    consent_accepted_at: datetime | None
    consent_version: str | None
    cap_ua: int | None
    token_id: int | None = None

    @property
    def owner(self) -> str:
        """The owner string the session manager uses for this user."""
        return str(self.user_id)


class UserFields(Protocol):
    """What a principal is made of (a stored user row has it)."""

    @property
    def id(self) -> int | None: ...
    @property
    def name(self) -> str: ...
    @property
    def is_admin(self) -> bool: ...
    @property
    def consent_accepted_at(self) -> datetime | None: ...
    @property
    def consent_version(self) -> str | None: ...
    @property
    def cap_ua(self) -> int | None: ...


def principal_of(user: UserFields, token_id: int | None = None) -> Principal:
    """The principal of a user row (and the token it came with, if any)."""
    assert user.id is not None
    return Principal(
        user_id=user.id,
        name=user.name,
        is_admin=user.is_admin,
        consent_accepted_at=user.consent_accepted_at,
        consent_version=user.consent_version,
        cap_ua=user.cap_ua,
        token_id=token_id,
    )


@dataclass(frozen=True, slots=True)
class AccessSnapshot:
    """Users, live tokens and device owners of one moment (see ``gateway.storage.access``)."""

    epoch: int = 0
    users: dict[int, Principal] = field(default_factory=dict)
    """User id -> the user (``token_id`` None)."""
    tokens: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Keyed token hash -> (token id, user id), live tokens only."""
    owners: dict[str, int | None] = field(default_factory=dict)
    """Upper-case device address -> owner id (None: unclaimed), this hub's devices."""


@dataclass(frozen=True, slots=True)
class AccessChange:
    """What one :meth:`AccessPolicy.replace` changed."""

    tokens_revoked: frozenset[int]
    users_changed: frozenset[int]
    """Users whose rights (admin, consent, cap) changed or who were deleted."""
    devices_changed: frozenset[str]
    """Devices whose owner changed, that were forgotten, or appeared claimed."""


class DeviceAccess(enum.Enum):
    """What one user may do with one device."""

    HIDDEN = "hidden"
    """Claimed by someone else: the device does not exist for this user (404)."""
    WATCH = "watch"
    """Unclaimed: visible and claimable, but no session may run on it until claimed (403)."""
    CONTROL = "control"
    """The user's own device, or any claimed device for an admin."""


Listener = Callable[[AccessChange], None]


def hash_token(token: str, *, pepper: str) -> str:
    """The stored form of a token: hex HMAC-SHA256 of the token keyed with the pepper."""
    return hmac.new(pepper.encode(), token.encode(), hashlib.sha256).hexdigest()


class AccessPolicy:
    """The hub's access decisions, from the current snapshot. See the module docstring.

    ``session_owner`` tells the user id that owns a session id (the session manager knows the
    live and recent ones); a frame or event of a session it does not know is shown to admins only.
    """

    def __init__(
        self, *, pepper: str, session_owner: Callable[[str], int | None] = lambda _sid: None
    ) -> None:
        self._pepper = pepper
        self._session_owner = session_owner
        self._snapshot = AccessSnapshot()
        self._principals: dict[int, Principal] = {}
        self._listeners: Listeners[AccessChange] = Listeners(log, "access listener %r failed")

    # --- the snapshot ---------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self._snapshot.epoch

    def replace(self, snapshot: AccessSnapshot) -> AccessChange:
        """Adopt a newer snapshot and tell every listener what changed."""
        old = self._snapshot
        old_tokens = {token_id for token_id, _ in old.tokens.values()}
        new_tokens = {token_id for token_id, _ in snapshot.tokens.values()}
        change = AccessChange(
            tokens_revoked=frozenset(old_tokens - new_tokens),
            users_changed=frozenset(
                uid for uid, user in old.users.items() if snapshot.users.get(uid) != user
            ),
            devices_changed=frozenset(
                address
                for address in old.owners.keys() | snapshot.owners.keys()
                if old.owners.get(address) != snapshot.owners.get(address)
            ),
        )
        self._snapshot = snapshot
        self._principals = {
            token_id: replace(snapshot.users[user_id], token_id=token_id)
            for token_id, user_id in snapshot.tokens.values()
            if user_id in snapshot.users
        }
        if change.tokens_revoked or change.users_changed or change.devices_changed:
            self._listeners.notify(change)
        return change

    def revoke(self, token_id: int) -> None:
        """Drop a token this hub just revoked in storage, before any reload: a revocation
        applies even if the reload that follows cannot read storage."""
        old = self._snapshot.tokens
        tokens = {key: value for key, value in old.items() if value[0] != token_id}
        if len(tokens) != len(old):
            # Same epoch: the poll still sees storage's newer one and reloads everything.
            self.replace(replace(self._snapshot, tokens=tokens))

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` after every change; returns the function that removes it."""
        return self._listeners.add(listener)

    # --- who is calling -------------------------------------------------------------------------

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a live token, or None (unknown or revoked). Memory only."""
        found = self._snapshot.tokens.get(hash_token(token, pepper=self._pepper))
        return None if found is None else self._principals.get(found[0])

    def principal(self, token_id: int | None) -> Principal | None:
        """The token's user as they are now; None once the token is revoked."""
        return None if token_id is None else self._principals.get(token_id)

    def user(self, user_id: int) -> Principal | None:
        return self._snapshot.users.get(user_id)

    # --- devices --------------------------------------------------------------------------------

    def owner_of(self, address: str) -> int | None:
        return self._snapshot.owners.get(address.upper())

    def recorded_devices(self) -> frozenset[str]:
        """Addresses this hub has a stored row for (claimed or not)."""
        return frozenset(self._snapshot.owners)

    def device_access(self, user: Principal, address: str) -> DeviceAccess:
        owner = self._snapshot.owners.get(address.upper())
        if user.is_admin:
            return DeviceAccess.CONTROL if owner is not None else DeviceAccess.WATCH
        if owner is None:
            return DeviceAccess.WATCH
        return DeviceAccess.CONTROL if owner == user.user_id else DeviceAccess.HIDDEN

    def may_see_device(self, user: Principal, address: str) -> bool:
        return self.device_access(user, address) is not DeviceAccess.HIDDEN

    # --- sessions, programs, tokens ------------------------------------------------------------

    @staticmethod
    def may_see_owned(user: Principal, owner_id: int | None) -> bool:
        """A session, custom program or token: its owner and admins; for anyone else it does
        not exist (404). Whoever may see a session may also control it (S8)."""
        return user.is_admin or owner_id == user.user_id

    def may_see_session_id(self, user: Principal, session_id: str) -> bool:
        if user.is_admin:
            return True
        return self._session_owner(session_id) == user.user_id

    # --- what flows out -------------------------------------------------------------------------

    def may_see_frame(self, user: Principal, device: str, session_id: str | None) -> bool:
        """A telemetry frame of ``device`` (upper-case, as the hub publishes it) and
        ``session_id``, if any. Hot path: dict lookups."""
        if user.is_admin:
            return True
        owner = self._snapshot.owners.get(device)
        if owner is not None and owner != user.user_id:
            return False
        return session_id is None or self._session_owner(session_id) == user.user_id

    def may_see_event(self, user: Principal, event: Event) -> bool:
        if user.is_admin:
            return True
        if isinstance(event, DeviceStateChanged):
            return self.may_see_device(user, event.address)
        if isinstance(event, SessionStateChanged | SessionNotice):
            return event.owner == user.owner
        if isinstance(event, PlanEvent):
            return event.user_id == user.user_id
        return True  # EventsDropped and other bookkeeping carry nobody's data


def snapshot_of(
    *,
    epoch: int,
    users: Iterable[Principal],
    tokens: Iterable[tuple[str, int, int]],
    owners: dict[str, int | None],
) -> AccessSnapshot:
    """A snapshot from plain rows: users, (token hash, token id, user id), device owners."""
    return AccessSnapshot(
        epoch=epoch,
        users={user.user_id: user for user in users},
        tokens={token_hash: (token_id, user_id) for token_hash, token_id, user_id in tokens},
        owners={address.upper(): owner for address, owner in owners.items()},
    )
