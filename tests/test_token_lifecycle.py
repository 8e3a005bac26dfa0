"""An Instagram Login token's life: refreshed before it expires (only once 24 hours old, as
Meta requires), the profile expired when Meta refuses it (on refresh or on a send, with
profile.disconnected), and reconnected through the connect flow, which sends what was held."""

import asyncio
import time

from sqlalchemy import text

from app.connections.service import refresh_tokens
from app.core import ids
from app.profiles.service import access_token
from tests.conftest import wait_for, worker_idle
from tests.inbound import customer_events, scalar
from tests.test_connect import _group, admin, authorize, browse, landed, sandbox_account, start

__all__ = ["admin"]  # the fixture, used by name
CUSTOMER = "1700000000000601"


async def connected(admin, clean, group_id: str) -> str:
    await sandbox_account(clean)
    back = landed(await browse(await authorize(clean, await start(admin, group_id))))
    assert back["success"] == ["true"], back
    return back["profile_id"][0]


async def _ciphertext(clean, profile_id: str) -> str:
    serial = ids.decode(ids.Kind.PROFILE, profile_id)
    return await scalar(
        clean, "SELECT access_token_encrypted FROM profiles WHERE id = :id", id=serial
    )


async def _make_due(clean, profile_id: str) -> None:
    """As if the token were 25 hours old and 3 days from expiring."""
    await clean.sandbox("POST", "/_sandbox/oauth/age", json={"seconds": 25 * 3600})
    async with clean.sessionmaker() as session, session.begin():
        await session.execute(
            text(
                "UPDATE profiles SET token_issued_at = now() - interval '25 hours', "
                "expires_at = now() + interval '3 days' WHERE id = :id"
            ),
            {"id": ids.decode(ids.Kind.PROFILE, profile_id)},
        )


async def _refresh(clean) -> int:
    return await refresh_tokens(clean.sessionmaker, clean.api.state.graph, clean.settings)


async def _published(admin, message_id: str) -> bool:
    return (await admin.client.messages.get(message_id)).status == "published"


async def _revoke(clean, profile_id: str) -> None:
    token = access_token(await _ciphertext(clean, profile_id), clean.settings)
    await clean.sandbox("POST", "/_sandbox/faults", json={"revoked_tokens": [token]})


async def test_a_token_is_refreshed_once_due_and_keeps_working(admin, clean):
    profile_id = await connected(admin, clean, await _group(admin))
    first = await _ciphertext(clean, profile_id)

    # Not 24 hours old: Meta would refuse, so it is not asked.
    assert await _refresh(clean) == 0
    calls = (await clean.sandbox("GET", "/_sandbox/oauth")).json()["calls"]
    assert "refresh_access_token" not in [c["path"] for c in calls]

    await _make_due(clean, profile_id)
    assert await _refresh(clean) == 1
    calls = (await clean.sandbox("GET", "/_sandbox/oauth")).json()["calls"]
    assert [c["path"] for c in calls].count("refresh_access_token") == 1
    assert await _ciphertext(clean, profile_id) != first
    profile = await admin.client.profiles.get(profile_id)
    assert profile.status == "active"
    assert profile.expires_at.timestamp() - time.time() > 59 * 86400
    assert await _refresh(clean) == 0  # fresh again: not due

    chat = await admin.client.chats.create(profile_id, CUSTOMER)
    sent = await admin.client.messages.send(chat.id, body="with the refreshed token")
    await wait_for(lambda: _published(admin, sent.id))


async def test_a_refused_refresh_expires_the_profile_until_it_is_reconnected(admin, clean):
    group_id = await _group(admin)
    profile_id = await connected(admin, clean, group_id)
    await _make_due(clean, profile_id)
    await _revoke(clean, profile_id)

    assert await _refresh(clean) == 0
    assert (await admin.client.profiles.get(profile_id)).status == "expired"
    disconnected = [d for k, d in await customer_events(clean) if k == "profile.disconnected"]
    assert [(d["id"], d["status"], d["origin"]) for d in disconnected] == [
        (profile_id, "expired", "automated")
    ]

    assert await connected(admin, clean, group_id) == profile_id
    assert (await admin.client.profiles.get(profile_id)).status == "active"
    kinds = [kind for kind, _ in await customer_events(clean)]
    assert kinds.count("profile.connected") == 2


async def test_a_send_meta_refuses_for_the_token_holds_the_rest_until_reconnected(admin, clean):
    group_id = await _group(admin)
    profile_id = await connected(admin, clean, group_id)
    chat = await admin.client.chats.create(profile_id, CUSTOMER)
    await _revoke(clean, profile_id)
    # Two sends accepted before anyone knows the token is dead.
    clean.worker.allow_pick_jobs = False
    try:
        refused = await admin.client.messages.send(chat.id, body="refused for the token")
        held = await admin.client.messages.send(chat.id, body="held until reconnected")
    finally:
        clean.worker.allow_pick_jobs = True

    async def first_failed() -> bool:
        return (await admin.client.messages.get(refused.id)).status == "failed"

    await wait_for(first_failed)
    failed = await admin.client.messages.get(refused.id)
    assert failed.error_details.platform_error_code == "190"
    assert (await admin.client.profiles.get(profile_id)).status == "expired"
    await worker_idle(clean)
    # The next is held back, not sent with the dead token and not failed.
    assert (await admin.client.messages.get(held.id)).status == "pending"
    kinds = [kind for kind, _ in await customer_events(clean)]
    assert kinds.count("profile.disconnected") == 1

    assert await connected(admin, clean, group_id) == profile_id
    await wait_for(lambda: _published(admin, held.id), timeout=30)
    sent = (await clean.sandbox("GET", "/_sandbox/sent")).json()["data"]
    assert [r["message"]["text"] for r in sent] == ["held until reconnected"]


async def test_reconnecting_with_the_cli_sends_what_was_held_at_once(account, clean):
    """`dmrelay profiles add` with a fresh token releases the sends held while the profile
    was expired through the same function as the connect flow: EXPIRED_HOLD_SECONDS is an
    hour here, so only the release can explain their delivery."""
    from tests.cli import dmrelay

    assert clean.settings.expired_hold_seconds >= 3600
    # One chat: the sends of two would go at once, each meeting the dead token.
    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    await _revoke(clean, account.profile_id)
    clean.worker.allow_pick_jobs = False
    try:
        refused = await account.client.messages.send(chat.id, body="refused for the token")
        held = [
            await account.client.messages.send(chat.id, body="held 1"),
            await account.client.messages.send(chat.id, body="held 2"),
            await account.client.messages.send(chat.id, body="held 3"),
        ]
    finally:
        clean.worker.allow_pick_jobs = True

    async def first_failed() -> bool:
        return (await account.client.messages.get(refused.id)).status == "failed"

    await wait_for(first_failed)
    await worker_idle(clean)
    assert (await account.client.profiles.get(account.profile_id)).status == "expired"
    for message in held:
        assert (await account.client.messages.get(message.id)).status == "pending"
    assert (await clean.sandbox("GET", "/_sandbox/sent")).json()["data"] == []

    done = await dmrelay(
        "profiles", "add", "--platform", "instagram", "--platform-id", account.platform_id,
        env={"DMRELAY_ACCESS_TOKEN": "a-fresh-token"},
    )  # fmt: skip
    assert done.code == 0, done.stderr
    assert (await account.client.profiles.get(account.profile_id)).status == "active"
    # Reconnected as the connect flow does: the customer hears of it.
    kinds = [kind for kind, _ in await customer_events(clean)]
    assert kinds.count("profile.connected") == 1

    async def all_published() -> bool:
        statuses = [(await account.client.messages.get(m.id)).status for m in held]
        return statuses == ["published"] * 3

    await wait_for(all_published, timeout=30)
    await worker_idle(clean)
    sent = (await clean.sandbox("GET", "/_sandbox/sent")).json()["data"]
    texts = [r["message"]["text"] for r in sent]
    # Each once, in the order they were accepted.
    assert texts == ["held 1", "held 2", "held 3"]


async def test_a_send_held_back_while_a_reconnect_commits_is_not_held_again(account, clean):
    """The race the release must win: a worker met the expired profile's pause and gives its
    message back, held, while a reconnect (profile active, held sends released) is about to
    commit. Holding it reads the profile's status under its row lock, so it waits for the
    reconnect and then does not hold the message: nothing is left waiting out the hour."""
    from datetime import timedelta

    from sqlalchemy import text

    from app.core import ids
    from app.core.db import create_engine
    from app.messages import repository

    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    clean.worker.allow_pick_jobs = False
    engine = create_engine(clean.settings).execution_options(isolation_level="AUTOCOMMIT")
    try:
        sent = await account.client.messages.send(chat.id, body="met the pause")
        message_id = ids.decode(ids.Kind.MESSAGE, sent.id)
        profile_id = ids.decode(ids.Kind.PROFILE, account.profile_id)
        async with clean.sessionmaker() as session, session.begin():
            await session.execute(
                text("UPDATE profiles SET status = 'expired' WHERE id = :p"), {"p": profile_id}
            )
            # The worker's claim on its first attempt.
            await session.execute(
                text(
                    "UPDATE messages SET attempts = 1, claimed_until = now() + interval '1 min'"
                    " WHERE id = :m"
                ),
                {"m": message_id},
            )

        async with clean.sessionmaker() as reconnect:
            # The reconnect's transaction, up to its commit: the profile active again, its
            # held messages released (the same statement as the connect flow's).
            await reconnect.execute(
                text("UPDATE profiles SET status = 'active' WHERE id = :p"), {"p": profile_id}
            )
            await repository.release_held(reconnect, profile_id)
            give_back = asyncio.ensure_future(
                repository.give_back(engine, message_id, 1, timedelta(hours=1), True)
            )

            async def waiting_for_the_reconnect() -> bool:
                # The give-back's statement is under way, waiting for a lock the reconnect
                # holds (a lock, not time, says the race is on).
                waiting = await scalar(
                    clean,
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database() AND query LIKE 'UPDATE messages%'",
                )
                return waiting > 0 or give_back.done()

            await wait_for(waiting_for_the_reconnect)
            await reconnect.commit()
        assert await give_back is False
        assert await scalar(
            clean,
            "SELECT next_attempt_at IS NULL AND claimed_until IS NULL AND attempts = 0"
            " FROM messages WHERE id = :m",
            m=message_id,
        )
    finally:
        clean.worker.allow_pick_jobs = True
        await engine.dispose()


async def test_a_token_refused_after_a_reconnect_leaves_the_profile_active(account, clean):
    """A send that took the old token may hear Meta's 190 after a reconnect has committed a
    new one: the refusal is of the token sent, so the reconnected profile stays active (and
    a refusal of the token it holds still expires it)."""
    from app.connections.service import connect_profile
    from app.profiles import repository as profiles_repository
    from app.profiles.models import Connection, ProfileGroup

    profile_id = ids.decode(ids.Kind.PROFILE, account.profile_id)
    old = await _ciphertext(clean, account.profile_id)
    async with clean.sessionmaker() as session, session.begin():
        group = await session.scalar(
            text("SELECT profile_group_id FROM profiles WHERE id = :id"), {"id": profile_id}
        )
        await connect_profile(
            session,
            clean.settings,
            platform_id=account.platform_id,
            access_token="a-token-from-the-reconnect",
            connection=Connection.INSTAGRAM_LOGIN,
            group=await session.get(ProfileGroup, group),
        )
    new = await _ciphertext(clean, account.profile_id)
    assert new != old

    async with clean.sessionmaker() as session, session.begin():
        assert not await profiles_repository.expire(session, profile_id, old)
    assert (await account.client.profiles.get(account.profile_id)).status == "active"

    async with clean.sessionmaker() as session, session.begin():
        assert await profiles_repository.expire(session, profile_id, new)
    assert (await account.client.profiles.get(account.profile_id)).status == "expired"
