"""The access policy's decisions, and what a change of access tells its listeners.

The policy is pure (no I/O): these tests build snapshots by hand. The end-to-end attacks on it
(real `mcgw serve`, real clients) are in tests/e2e/test_trust_boundary.py.
"""

from __future__ import annotations

import pytest

from gateway.access import (
    AccessChange,
    AccessPolicy,
    DeviceAccess,
    Principal,
    hash_token,
    snapshot_of,
)
from gateway.events import DeviceStateChanged, EventsDropped, SessionNotice, SessionStateChanged

PEPPER = "pepper"
DEV_ADA, DEV_FREE = "AA:00:00:00:00:01", "AA:00:00:00:00:02"


def person(user_id: int, *, admin: bool = False) -> Principal:
    return Principal(
        user_id=user_id,
        name=f"user{user_id}",
        is_admin=admin,
        consent_accepted_at=None,
        consent_version=None,
        cap_ua=None,
    )


def snapshot(epoch: int, *, tokens: dict[str, tuple[int, int]], admin: set[int] = frozenset()):  # type: ignore[no-untyped-def,assignment]
    return snapshot_of(
        epoch=epoch,
        users=[person(uid, admin=uid in admin) for uid in (1, 2, 3)],
        tokens=[(hash_token(t, pepper=PEPPER), tid, uid) for t, (tid, uid) in tokens.items()],
        owners={DEV_ADA.lower(): 1, DEV_FREE: None},
    )


@pytest.fixture
def policy() -> AccessPolicy:
    sessions = {"s-ada": 1, "s-admin": 3}
    policy = AccessPolicy(pepper=PEPPER, session_owner=sessions.get)
    policy.replace(
        snapshot(1, tokens={"t-ada": (10, 1), "t-bob": (20, 2), "t-root": (30, 3)}, admin={3})
    )
    return policy


def test_tokens_authenticate_to_their_user_and_nothing_else(policy: AccessPolicy) -> None:
    ada = policy.authenticate("t-ada")
    assert ada is not None
    assert (ada.user_id, ada.token_id, ada.is_admin) == (1, 10, False)
    assert policy.authenticate("t-nobody") is None
    assert policy.authenticate("") is None
    assert policy.principal(20) == policy.authenticate("t-bob")
    assert policy.principal(None) is None


def test_devices_are_hidden_watched_or_controlled(policy: AccessPolicy) -> None:
    ada, bob, root = (policy.authenticate(t) for t in ("t-ada", "t-bob", "t-root"))
    assert ada is not None
    assert bob is not None
    assert root is not None
    assert policy.device_access(ada, DEV_ADA) is DeviceAccess.CONTROL
    assert policy.device_access(bob, DEV_ADA) is DeviceAccess.HIDDEN
    assert policy.device_access(root, DEV_ADA) is DeviceAccess.CONTROL
    # Unclaimed, recorded or merely heard: everyone sees it, nobody controls it before claiming.
    for user in (ada, bob, root):
        assert policy.device_access(user, DEV_FREE) is DeviceAccess.WATCH
        assert policy.device_access(user, "AA:00:00:00:00:99") is DeviceAccess.WATCH
    assert policy.recorded_devices() == {DEV_ADA, DEV_FREE}


def test_frames_and_events_follow_the_device_and_the_session(policy: AccessPolicy) -> None:
    ada, bob, root = (policy.authenticate(t) for t in ("t-ada", "t-bob", "t-root"))
    assert ada is not None
    assert bob is not None
    assert root is not None
    assert policy.may_see_frame(ada, DEV_ADA, "s-ada")
    assert not policy.may_see_frame(bob, DEV_ADA, None)
    assert policy.may_see_frame(bob, DEV_FREE, None)
    # A session on a device bob may watch is still not bob's to see; nor one nobody knows.
    assert not policy.may_see_frame(bob, DEV_FREE, "s-admin")
    assert not policy.may_see_frame(ada, DEV_ADA, "s-admin")
    assert not policy.may_see_frame(ada, DEV_ADA, "s-unknown")
    assert policy.may_see_frame(root, DEV_ADA, "s-unknown")

    started = SessionStateChanged("s-ada", DEV_ADA, "1", "running", "started")
    cue = SessionNotice("s-ada", DEV_ADA, "1", "move")
    assert policy.may_see_event(ada, started)
    assert policy.may_see_event(ada, cue)
    assert not policy.may_see_event(bob, started)
    assert not policy.may_see_event(bob, cue)
    assert policy.may_see_event(root, cue)
    assert not policy.may_see_event(bob, DeviceStateChanged(DEV_ADA, "lost"))
    assert policy.may_see_event(bob, DeviceStateChanged(DEV_FREE, "lost"))
    assert policy.may_see_event(bob, EventsDropped(3))


def test_owned_things_are_for_their_owner_and_admins(policy: AccessPolicy) -> None:
    ada, bob, root = (policy.authenticate(t) for t in ("t-ada", "t-bob", "t-root"))
    assert ada is not None
    assert bob is not None
    assert root is not None
    assert policy.may_see_owned(ada, 1)
    assert not policy.may_see_owned(bob, 1)
    assert not policy.may_see_owned(bob, None)
    assert policy.may_see_owned(root, 1)
    assert policy.may_see_session_id(ada, "s-ada")
    assert not policy.may_see_session_id(bob, "s-ada")


def test_a_new_snapshot_says_what_changed_and_applies_at_once(policy: AccessPolicy) -> None:
    changes: list[AccessChange] = []
    remove = policy.add_listener(changes.append)
    # ada's token revoked, bob made admin, ada's device handed to bob.
    newer = snapshot_of(
        epoch=2,
        users=[person(1), person(2, admin=True), person(3, admin=True)],
        tokens=[
            (hash_token("t-bob", pepper=PEPPER), 20, 2),
            (hash_token("t-root", pepper=PEPPER), 30, 3),
        ],
        owners={DEV_ADA: 2, DEV_FREE: None},
    )
    change = policy.replace(newer)
    assert changes == [change]
    assert change.tokens_revoked == {10}
    assert change.users_changed == {2}
    assert change.devices_changed == {DEV_ADA}
    assert policy.authenticate("t-ada") is None
    assert policy.principal(10) is None
    bob = policy.principal(20)
    assert bob is not None
    assert bob.is_admin
    assert policy.epoch == 2

    # Nothing changed: listeners are not bothered.
    policy.replace(newer)
    assert len(changes) == 1
    remove()
    policy.replace(snapshot(3, tokens={}))
    assert len(changes) == 1


def test_a_failing_listener_does_not_stop_the_others(policy: AccessPolicy) -> None:
    seen: list[AccessChange] = []

    def broken(_change: AccessChange) -> None:
        raise RuntimeError("boom")

    policy.add_listener(broken)
    policy.add_listener(seen.append)
    policy.replace(snapshot(2, tokens={}))
    assert len(seen) == 1


def test_a_token_revoked_here_is_dropped_at_once_and_storage_then_reloads_all(
    policy: AccessPolicy,
) -> None:
    """The revoking hub drops the token from memory before reading storage back (which may
    fail just then); the unchanged epoch makes the next poll reload everything."""
    changes: list[AccessChange] = []
    policy.add_listener(changes.append)
    policy.revoke(20)
    assert policy.authenticate("t-bob") is None
    assert policy.principal(20) is None
    assert policy.authenticate("t-ada") is not None
    assert [c.tokens_revoked for c in changes] == [frozenset({20})]
    assert policy.epoch == 1
    policy.revoke(20)  # twice: nothing more happens
    assert len(changes) == 1


def test_each_remover_undoes_its_own_registration_only(policy: AccessPolicy) -> None:
    seen: list[AccessChange] = []
    remove_first = policy.add_listener(seen.append)
    policy.add_listener(seen.append)  # the same callable again: a second registration
    remove_first()
    remove_first()  # idempotent: never removes the other registration
    policy.replace(snapshot(2, tokens={}))
    assert len(seen) == 1
