"""Backfill through the Conversations API: on connect and on request, paced at Meta's 2 calls
per second, following cursors, details only for a conversation's 20 most recent messages,
one sync per profile at a time, and idempotent."""

from datetime import UTC, datetime, timedelta

import pytest
from postproxy import ConflictError

from tests.conftest import wait_for, worker_idle
from tests.inbound import scalar
from tests.test_connect import (
    ACCOUNT,
    _group,
    admin,
    authorize,
    browse,
    landed,
    sandbox_account,
    start,
)

__all__ = ["admin"]
NOW = datetime.now(UTC)


def _at(delta: timedelta) -> str:
    return (NOW - delta).strftime("%Y-%m-%dT%H:%M:%S+0000")


def _seed() -> dict:
    long = [
        {
            "text": f"long {i}",
            "sent_by": "account" if i % 2 else "participant",
            "created_time": _at(timedelta(hours=1, minutes=30 - i)),
        }
        for i in range(21)  # one more than Meta details
    ]
    return {
        "account_id": ACCOUNT["user_id"],
        "username": ACCOUNT["username"],
        "conversations": [
            {"participant_id": "1700000000000801", "participant_username": "ann", "messages": long},
            {
                "participant_id": "1700000000000802",
                "participant_username": "bob",
                "messages": [{"text": "hi from bob", "created_time": _at(timedelta(hours=3))}],
            },
            {
                "participant_id": "1700000000000803",
                "participant_username": "cy",
                "messages": [{"text": "long ago", "created_time": _at(timedelta(days=40))}],
            },
        ],
    }


async def _done(admin, profile_id: str, sync_id: str):
    async def finished():
        sync = await admin.client.profiles.chat_sync(profile_id, sync_id)
        return sync if sync.status in ("completed", "failed") else None

    return await wait_for(finished, timeout=90, interval=0.5)


async def test_a_backfill_imports_recent_history_once(admin, clean):
    await clean.sandbox("DELETE", "/_sandbox/conversations")
    await clean.sandbox("POST", "/_sandbox/conversations", json=_seed())
    await sandbox_account(clean)
    back = landed(await browse(await authorize(clean, await start(admin, await _group(admin)))))
    profile_id = back["profile_id"][0]

    # Connecting started a sync.
    (first,) = (await admin.client.profiles.chat_syncs(profile_id)).data
    assert first.trigger == "connect"
    first = await _done(admin, profile_id, first.id)
    assert (first.status, first.error) == ("completed", None)
    assert (first.chats_seen, first.messages_imported) == (3, 22)

    chats = {c.participant_username: c for c in (await admin.client.chats.list(profile_id)).data}
    assert set(chats) == {"ann", "bob", "cy"}
    ann = await admin.client.messages.list(chats["ann"].id, per_page=100)
    # Only the 20 most recent can be read: "long 0" cannot.
    assert sorted(m.body for m in ann.data) == sorted(f"long {i}" for i in range(1, 21))
    assert {m.direction for m in ann.data} == {"inbound", "outbound"}
    assert chats["ann"].last_inbound_at is not None

    # Meta's 2 calls per second were kept (the sandbox refuses more; none was refused).
    calls = (await clean.sandbox("GET", "/_sandbox/conversations")).json()["calls"]
    assert len(calls) == 1 + (1 + 20) + (1 + 1) + (1 + 1)
    times = sorted(c["at"] for c in calls)
    assert all(later - earlier >= 0.9 for earlier, later in zip(times, times[2:], strict=False))

    # On request, from a date: one at a time, and nothing new the second time.
    since = (NOW - timedelta(days=10)).date().isoformat()
    again = await admin.client.profiles.backfill_chats(profile_id, from_=since)
    assert (again.trigger, again.status) == ("backfill", "pending")
    with pytest.raises(ConflictError, match="already running"):
        await admin.client.profiles.backfill_chats(profile_id, from_=since)
    again = await _done(admin, profile_id, again.id)
    assert (again.status, again.chats_seen, again.messages_imported) == ("completed", 2, 0)
    assert await scalar(clean, "SELECT count(*) FROM messages") == 22
    listed = await admin.client.profiles.chat_syncs(profile_id, trigger="backfill")
    assert [s.id for s in listed.data] == [again.id] and listed.total == 1


async def test_a_sync_whose_job_was_lost_is_queued_again(admin, clean):
    from sqlalchemy import text

    from app.chat_syncs import repository, service
    from app.core import ids

    await clean.sandbox("DELETE", "/_sandbox/conversations")
    profile_id = ids.decode(ids.Kind.PROFILE, admin.profile_id)
    async with clean.sessionmaker() as session, session.begin():
        lost = await repository.start(session, profile_id, "backfill", None)  # no job queued
        await session.execute(
            text("UPDATE chat_syncs SET updated_at = now() - interval '1 hour' WHERE id = :id"),
            {"id": lost.id},
        )
    public_id = ids.encode(ids.Kind.CHAT_SYNC, lost.id)
    with pytest.raises(ConflictError):  # it holds the profile's one open sync
        await admin.client.profiles.backfill_chats(admin.profile_id, from_="2026-01-01")
    await service.sweep(clean.sessionmaker, clean.worker.pool)
    assert (await _done(admin, admin.profile_id, public_id)).status == "completed"


async def test_a_backfill_imports_attachments_as_webhooks_store_them_once(admin, clean):
    """Meta's Conversations API gives a message's files in `attachments` (image_data,
    video_data, file_url): they are stored as a webhook's are, and copied to dmrelay's
    media store; a second backfill adds and copies nothing."""
    from tests.test_unsend_erasure import media_files

    media = f"{clean.sandbox_url}/_sandbox/media"
    await clean.sandbox("DELETE", "/_sandbox/conversations")
    seed = {
        "account_id": ACCOUNT["user_id"],
        "username": ACCOUNT["username"],
        "conversations": [
            {
                "participant_id": "1700000000000811",
                "participant_username": "dee",
                "messages": [
                    {
                        "text": "look",
                        "created_time": _at(timedelta(minutes=5)),
                        "attachments": [
                            {"type": "image", "url": f"{media}/backfill-photo.png"},
                            {"type": "video", "url": f"{media}/backfill-clip.mp4"},
                        ],
                    },
                    {
                        "sent_by": "account",
                        "created_time": _at(timedelta(minutes=4)),
                        "attachments": [
                            {"type": "file", "url": f"{media}/backfill-menu.pdf", "name": "menu"}
                        ],
                    },
                ],
            }
        ],
    }
    await clean.sandbox("POST", "/_sandbox/conversations", json=seed)
    before = media_files(clean)
    await sandbox_account(clean)
    back = landed(await browse(await authorize(clean, await start(admin, await _group(admin)))))
    profile_id = back["profile_id"][0]

    (sync,) = (await admin.client.profiles.chat_syncs(profile_id)).data  # on connect
    sync = await _done(admin, profile_id, sync.id)
    assert (sync.status, sync.messages_imported) == ("completed", 2)
    (chat,) = (await admin.client.chats.list(profile_id)).data
    base = clean.settings.media_base_url

    async def copied():
        page = await admin.client.messages.list(chat.id, per_page=10)
        found = {m.body: m for m in page.data}
        attachments = [a for m in page.data for a in m.attachments or []]
        done = len(attachments) == 3 and all(a.status == "processed" for a in attachments)
        return found if done else None

    found = await wait_for(copied)
    photo, clip = found["look"].attachments
    (menu,) = found[None].attachments
    assert (photo.type, clip.type, menu.type) == ("image", "video", "file")
    assert found["look"].direction == "inbound" and found[None].direction == "outbound"
    for attachment in (photo, clip, menu):
        assert attachment.url.startswith(f"{base}/"), attachment.url
    new_files = media_files(clean) - before
    assert len(new_files) == 3

    again = await admin.client.profiles.backfill_chats(profile_id, from_="2026-01-01")
    again = await _done(admin, profile_id, again.id)
    assert (again.status, again.messages_imported) == ("completed", 0)
    await worker_idle(clean)
    assert media_files(clean) - before == new_files
    assert await scalar(clean, "SELECT count(*) FROM messages") == 2
