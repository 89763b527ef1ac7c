"""Users, consent, tokens, devices (scoped by hub) and programs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from gateway.errors import Conflict, NotFound
from gateway.programs import Program, builtin_programs
from gateway.storage import repo
from gateway.storage.access import load_access_rows, read_access_epoch, touch_tokens
from gateway.storage.models import ApiToken, ProgramRecord
from gateway.storage.writer import StorageWriter

HUB = "hub-test"
PEPPER = "pepper-for-tests"


async def test_users_consent_and_caps(writer: StorageWriter) -> None:
    ada = await writer.run(lambda s: repo.create_user(session=s, name="ada", is_admin=True))
    assert ada.consent_accepted_at is None
    assert ada.created_at.tzinfo is not None
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    accepted = await writer.run(
        lambda s: repo.accept_consent(session=s, user_id=ada.id, version="2026-01", now=at)
    )
    assert (accepted.consent_accepted_at, accepted.consent_version) == (at, "2026-01")
    capped = await writer.run(lambda s: repo.set_user_cap(session=s, user_id=ada.id, cap_ua=180))
    assert capped.cap_ua == 180
    with pytest.raises(ValueError):
        await writer.run(lambda s: repo.set_user_cap(session=s, user_id=ada.id, cap_ua=0))
    users = await writer.run(lambda s: repo.list_users(session=s))
    assert [(u.name, u.is_admin, u.cap_ua) for u in users] == [("ada", True, 180)]
    await writer.run(lambda s: repo.delete_user(session=s, user_id=ada.id))
    with pytest.raises(NotFound):
        await writer.run(lambda s: repo.get_user(session=s, user_id=ada.id))


async def test_tokens_store_only_a_keyed_hash(writer: StorageWriter, engine: Engine) -> None:
    user = await writer.run(lambda s: repo.create_user(session=s, name="app"))
    row, token = await writer.run(
        lambda s: repo.create_token(session=s, user_id=user.id, name="phone", pepper=PEPPER)
    )
    assert token.startswith("mcgw_")
    assert len(token) > 40
    with Session(engine) as s:
        stored = s.exec(select(ApiToken.token_hash)).all()
    assert stored == [repo.hash_token(token, pepper=PEPPER)]
    assert token not in stored[0]
    assert repo.hash_token(token, pepper="other") != stored[0]

    live = await writer.run(lambda s: load_access_rows(session=s, hub_id=HUB))
    assert [(t.id, t.user_id, t.token_hash) for t in live.tokens] == [(row.id, user.id, stored[0])]
    epoch = live.epoch

    with pytest.raises(NotFound):  # only the owner's tokens
        await writer.run(lambda s: repo.revoke_token(session=s, token_id=row.id, user_id=999))
    await writer.run(lambda s: repo.revoke_token(session=s, token_id=row.id, user_id=user.id))
    after = await writer.run(lambda s: load_access_rows(session=s, hub_id=HUB))
    assert after.tokens == ()
    assert after.epoch > epoch  # every hub on the database reloads
    again = await writer.run(lambda s: repo.revoke_token(session=s, token_id=row.id))
    assert again.revoked_at is not None
    assert (await writer.run(lambda s: read_access_epoch(session=s))) == after.epoch

    t0 = datetime.now(UTC)
    await writer.run(lambda s: touch_tokens(session=s, used={row.id: t0}))
    assert (await writer.run(lambda s: read_access_epoch(session=s))) == after.epoch
    tokens = await writer.run(lambda s: repo.list_tokens(session=s, user_id=user.id))
    assert [t.name for t in tokens] == ["phone"]
    assert tokens[0].revoked_at is not None


async def test_devices_are_per_hub(writer: StorageWriter) -> None:
    ada = await writer.run(lambda s: repo.create_user(session=s, name="ada"))
    bob = await writer.run(lambda s: repo.create_user(session=s, name="bob"))
    address = "AA:BB:CC:DD:EE:01"
    for hub in (HUB, "hub-b"):
        await writer.run(
            lambda s, h=hub: repo.upsert_device(
                session=s, hub_id=h, address=address, name=f"dev@{h}", model="MC-1", bonded=False
            )
        )
    updated = await writer.run(
        lambda s: repo.upsert_device(
            session=s, hub_id=HUB, address=address, firmware="1.2.3", bonded=True
        )
    )
    assert (updated.name, updated.model, updated.firmware, updated.bonded) == (
        f"dev@{HUB}",
        "MC-1",
        "1.2.3",
        True,
    )
    claimed = await writer.run(
        lambda s: repo.claim_device(session=s, hub_id=HUB, address=address, user_id=ada.id)
    )
    assert claimed.owner_id == ada.id
    with pytest.raises(Conflict):
        await writer.run(
            lambda s: repo.claim_device(session=s, hub_id=HUB, address=address, user_id=bob.id)
        )
    other = await writer.run(lambda s: repo.get_device(session=s, hub_id="hub-b", address=address))
    assert (other.owner_id, other.bonded, other.name) == (None, False, "dev@hub-b")

    await writer.run(lambda s: repo.forget_device(session=s, hub_id=HUB, address=address))
    assert await writer.run(lambda s: repo.list_devices(session=s, hub_id=HUB)) == []
    assert len(await writer.run(lambda s: repo.list_devices(session=s, hub_id="hub-b"))) == 1
    with pytest.raises(NotFound):
        await writer.run(lambda s: repo.forget_device(session=s, hub_id=HUB, address=address))


async def test_programs_builtin_and_custom(writer: StorageWriter) -> None:
    library = builtin_programs()
    assert await writer.run(
        lambda s: repo.sync_builtin_programs(session=s, programs=library)
    ) == len(library)
    assert await writer.run(lambda s: repo.sync_builtin_programs(session=s, programs=library)) == 0
    ada = await writer.run(lambda s: repo.create_user(session=s, name="ada"))
    bob = await writer.run(lambda s: repo.create_user(session=s, name="bob"))
    mine = Program.model_validate(
        {
            "slug": "my-routine",
            "name": "Mine",
            "steps": [{"zone": "neck", "amplitude_ua": 200, "duration_s": 60}],
        }
    )
    created = await writer.run(
        lambda s: repo.create_program(session=s, program=mine, owner_id=ada.id)
    )
    assert repo.to_program(created) == mine
    with pytest.raises(Conflict):
        await writer.run(lambda s: repo.create_program(session=s, program=mine, owner_id=bob.id))
    changed = mine.model_copy(update={"name": "Mine, longer"})
    with pytest.raises(NotFound):
        await writer.run(lambda s: repo.update_program(session=s, program=changed, owner_id=bob.id))
    updated = await writer.run(
        lambda s: repo.update_program(session=s, program=changed, owner_id=ada.id)
    )
    assert updated.name == "Mine, longer"
    assert updated.updated_at >= updated.created_at

    seen_by_ada = await writer.run(lambda s: repo.list_programs(session=s, owner_id=ada.id))
    seen_by_bob = await writer.run(lambda s: repo.list_programs(session=s, owner_id=bob.id))
    assert {p.slug for p in seen_by_ada} == {p.slug for p in library} | {"my-routine"}
    assert {p.slug for p in seen_by_bob} == {p.slug for p in library}
    builtin = library[0]
    with pytest.raises(Conflict, match="built in"):
        await writer.run(lambda s: repo.delete_program(session=s, slug=builtin.slug, owner_id=None))
    stored = await writer.run(lambda s: repo.get_program(session=s, slug=builtin.slug))
    assert repo.to_program(stored) == builtin
    await writer.run(lambda s: repo.delete_program(session=s, slug="my-routine", owner_id=ada.id))
    with pytest.raises(NotFound):
        await writer.run(lambda s: repo.get_program(session=s, slug="my-routine"))


async def test_builtin_sync_refuses_a_user_program_with_the_same_slug(
    writer: StorageWriter,
) -> None:
    ada = await writer.run(lambda s: repo.create_user(session=s, name="ada"))
    builtin = builtin_programs()[0]
    squatter = builtin.model_copy(update={"builtin": False})
    await writer.run(lambda s: repo.create_program(session=s, program=squatter, owner_id=ada.id))
    with pytest.raises(Conflict, match="rename"):
        await writer.run(lambda s: repo.sync_builtin_programs(session=s, programs=[builtin]))
    rows = await writer.run(lambda s: list(s.exec(select(ProgramRecord)).all()))
    assert [r.builtin for r in rows] == [False]
