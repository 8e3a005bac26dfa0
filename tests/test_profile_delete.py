"""DELETE /api/profiles/{id}: a disconnect stops sends and webhooks and keeps the history;
with erase=true nothing of the profile is left anywhere (the database is searched whole)."""

import json
import time
import uuid
from pathlib import Path

import pytest
from postproxy import ConflictError, NotFoundError, ValidationError

from tests.conftest import empty, wait_for, worker_idle
from tests.inbound import customer_events, post_payload, scalar, settled
from tests.test_connect import admin
from tests.test_unsend_erasure import (
    customer_message,
    database_dump,
    delivery,
    media_files,
    secret,
)

__all__ = ["admin"]  # the fixture, used by name
CUSTOMER = "1700000000000401"


async def test_a_disconnect_stops_sends_and_webhooks_and_keeps_history(account, clean):
    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    sent = await account.client.messages.send(chat.id, body="delivered before")
    await wait_for(
        lambda: _status_is(account, sent.id, "published"),
    )
    # The first send's job may still be draining the chat: once it has ended, no running
    # job can claim the next send before the disconnect.
    await worker_idle(clean)
    # One send that no worker has taken yet.
    clean.worker.allow_pick_jobs = False
    try:
        waiting = await account.client.messages.send(chat.id, body="never delivered")
        assert (await account.client.profiles.delete(account.profile_id)).success is True
    finally:
        clean.worker.allow_pick_jobs = True
    await worker_idle(clean)

    profile = await account.client.profiles.get(account.profile_id)
    assert profile.status == "inactive"
    failed = await account.client.messages.get(waiting.id)
    assert failed.status == "failed" and "disconnected" in failed.error_message
    assert (await account.client.messages.get(sent.id)).status == "published"
    sent_to_meta = (await clean.sandbox("GET", "/_sandbox/sent")).json()
    assert [r["message"]["text"] for r in sent_to_meta["data"]] == ["delivered before"]
    with pytest.raises(ValidationError, match="inactive"):
        await account.client.messages.send(chat.id, body="after")

    # Meta's webhooks for it are no longer applied.
    mid = f"aWdf_{uuid.uuid4().hex}"
    item = customer_message(mid, "hello?", f"{clean.sandbox_url}/_sandbox/media/x.png")
    assert (await post_payload(clean, delivery(item))).status_code == 200
    await settled(clean)
    with pytest.raises(NotFoundError):
        await account.client.messages.get(mid)

    events = [(kind, data) for kind, data in await customer_events(clean)]
    disconnected = [data for kind, data in events if kind == "profile.disconnected"]
    assert disconnected == [
        {
            "id": account.profile_id,
            "name": "acme",
            "platform": "instagram",
            "profile_group_id": profile.profile_group_id,
            "status": "inactive",
            "uid": account.platform_id,
            "platform_id": account.platform_id,
            "username": "acme",
            "origin": "user",
        }
    ]
    # Again: nothing more happens.
    assert (await account.client.profiles.delete(account.profile_id)).success is True
    kinds = [kind for kind, _ in await customer_events(clean)]
    assert kinds.count("profile.disconnected") == 1


async def _status_is(account, message_id: str, status: str) -> bool:
    return (await account.client.messages.get(message_id)).status == status


async def test_erasing_a_profile_leaves_nothing_of_it(account, clean):
    said, reply = secret("said"), secret("reply")
    media_name = f"{secret('image')}.png"
    mid = f"aWdf_{uuid.uuid4().hex}"
    item = customer_message(mid, said, f"{clean.sandbox_url}/_sandbox/media/{media_name}")
    item["timestamp"] = int(time.time() * 1000)  # so that the window is open for a reply
    # Kept whole for diagnosis: a delivery with an item dmrelay cannot understand.
    assert (await post_payload(clean, delivery(item, "junk"))).status_code == 200
    await settled(clean)

    async def mirrored():
        [attachment] = (await account.client.messages.get(mid)).attachments
        return attachment.url if attachment.status == "processed" else None

    key = (await wait_for(mirrored)).removeprefix(f"{clean.settings.media_base_url}/")
    chat = (await account.client.chats.list(account.profile_id)).data[0]
    answer = await account.client.messages.send(chat.id, body=reply, idempotency_key=secret("idem"))
    await wait_for(lambda: _status_is(account, answer.id, "published"))
    await settled(clean)
    # message.received for the customer's, message.sent and .delivered for the reply.
    assert await scalar(clean, "SELECT count(*) FROM customer_events") == 3
    assert await scalar(clean, "SELECT count(*) FROM idempotency_keys") == 1

    result = await account.client._request(
        "DELETE", f"/profiles/{account.profile_id}", params={"erase": "true"}
    )
    assert result == {"success": True}
    # Invisible at once, while a job erases it.
    with pytest.raises(NotFoundError):
        await account.client.profiles.get(account.profile_id)
    with pytest.raises(NotFoundError):
        await account.client.chats.get(chat.id)
    with pytest.raises(NotFoundError):
        await account.client.messages.get(answer.id)
    assert (await account.client.profiles.list()).data == []

    async def media_erased():
        pending = await scalar(clean, "SELECT count(*) FROM media_deletions")
        profiles = await scalar(clean, "SELECT count(*) FROM profiles")
        return key not in media_files(clean) and pending == 0 and profiles == 0

    await wait_for(media_erased)
    dump = await database_dump(clean)
    for kept in (said, reply, media_name, key, mid, account.platform_id):
        assert kept not in dump, kept


async def test_a_foreign_or_unknown_profile_cannot_be_deleted(clean):
    from tests.conftest import connect

    mine = await connect(clean, platform_id="2001", group="a", key_group="a")
    other = await connect(clean, platform_id="2002", group="b", key_group="b")
    try:
        with pytest.raises(NotFoundError, match="Profile not found"):
            await mine.client.profiles.delete(other.profile_id)
        with pytest.raises(NotFoundError):
            await mine.client.profiles.delete("nope")
        assert (await other.client.profiles.get(other.profile_id)).status == "active"
    finally:
        await mine.client.close()
        await other.client.close()
        await empty(clean)


def _idle(clean):
    async def idle() -> bool:
        return all(task.done() for task in clean.worker.tasks.values())

    return idle


async def _erased(clean, profile_serial: int) -> bool:
    left = await scalar(
        clean,
        "SELECT (SELECT count(*) FROM profiles WHERE id = :id)"
        " + (SELECT count(*) FROM chats) + (SELECT count(*) FROM messages)"
        " + (SELECT count(*) FROM customer_events) + (SELECT count(*) FROM inbound_events)"
        " + (SELECT count(*) FROM media_deletions)",
        id=profile_serial,
    )
    return left == 0


async def _big_history(clean, profile_serial: int, platform_id: str, chats: int, each: int):
    """`chats` chats of `each` messages (one stored file each), with their customer events
    and staged inbound events, written straight into the database (what a long history
    leaves); the stored files' keys."""
    from sqlalchemy import text

    root = Path(clean.settings.media_dir)
    keys = []
    async with clean.sessionmaker() as session, session.begin():
        for c in range(chats):
            chat_id = await session.scalar(
                text(
                    "INSERT INTO chats (profile_id, participant_external_id) "
                    "VALUES (:p, :who) RETURNING id"
                ),
                {"p": profile_serial, "who": f"17000000009{c:05d}"},
            )
            for m in range(each):
                key = f"erase-test/{uuid.uuid4().hex}.png"
                (root / key).parent.mkdir(parents=True, exist_ok=True)
                (root / key).write_bytes(b"png")
                keys.append(key)
                attachments = json.dumps([{"type": "image", "storage_key": key}])
                message_id = await session.scalar(
                    text(
                        "INSERT INTO messages (chat_id, profile_id, direction, status, body,"
                        " external_id, attachments) VALUES (:c, :p, 'inbound', 'received',"
                        " :body, :mid, CAST(:a AS jsonb)) RETURNING id"
                    ),
                    {
                        "c": chat_id,
                        "p": profile_serial,
                        "body": f"said {c}/{m}",
                        "mid": f"aWdf_{uuid.uuid4().hex}",
                        "a": attachments,
                    },
                )
                await session.execute(
                    text(
                        "INSERT INTO customer_events (profile_id, type, data, message_id)"
                        " VALUES (:p, 'message.received', '{}', :m)"
                    ),
                    {"p": profile_serial, "m": message_id},
                )
                await session.execute(
                    text(
                        "INSERT INTO inbound_events (account_id, participant_id, kind,"
                        " dedupe_key, occurred_at, payload, status) VALUES (:a, :who,"
                        " 'message', :d, now(), '{}', 'applied')"
                    ),
                    {"a": platform_id, "who": f"17000000009{c:05d}", "d": uuid.uuid4().hex},
                )
    return keys


async def test_erasing_a_big_history_is_a_job_in_batches_resumed_after_a_cut(
    account, clean, monkeypatch
):
    """The request answers at once and hides everything; the worker's job deletes it in
    bounded batches. A run cut short (here: its time budget is nil, as if the worker died
    after one batch) leaves a consistent part done, and the sweep's next run finishes it."""
    from app.core import ids
    from app.profiles import erasure

    serial = ids.decode(ids.Kind.PROFILE, account.profile_id)
    keys = await _big_history(clean, serial, account.platform_id, chats=7, each=9)
    monkeypatch.setattr(erasure, "BATCH", 5)
    monkeypatch.setattr(erasure, "CHAT_BATCH", 2)
    monkeypatch.setattr(erasure, "RUN_SECONDS", 0.0)

    result = await account.client._request(
        "DELETE", f"/profiles/{account.profile_id}", params={"erase": "true"}
    )
    assert result == {"success": True}
    with pytest.raises(NotFoundError):
        await account.client.profiles.get(account.profile_id)
    assert (await account.client.profiles.list()).data == []

    # The first run stops after one batch of chats: part is gone, the rest still there.
    async def first_run_done() -> bool:
        chats = await scalar(clean, "SELECT count(*) FROM chats")
        return chats == 5

    await wait_for(first_run_done)
    clean.worker.allow_pick_jobs = False  # no sweep's run meanwhile
    try:
        await wait_for(_idle(clean))
        assert await scalar(clean, "SELECT count(*) FROM chats") == 5
        assert await scalar(clean, "SELECT count(*) FROM profiles") == 1
        assert await scalar(clean, "SELECT count(*) FROM messages") == 5 * 9
    finally:
        monkeypatch.setattr(erasure, "RUN_SECONDS", 60.0)
        clean.worker.allow_pick_jobs = True

    await wait_for(lambda: _erased(clean, serial), timeout=60)
    assert not set(keys) & media_files(clean)
    # Again (a duplicate job, a late sweep): nothing to do, nothing fails.
    assert await erasure.Eraser(clean.sessionmaker, clean.worker.pool).erase(serial) is True


async def _oauth_connected(admin, clean) -> str:
    from tests.test_connect import _group, authorize, browse, landed, sandbox_account, start

    await sandbox_account(clean)
    back = landed(await browse(await authorize(clean, await start(admin, await _group(admin)))))
    assert back["success"] == ["true"], back
    return back["profile_id"][0]


async def _oauth(clean) -> dict:
    return (await clean.sandbox("GET", "/_sandbox/oauth")).json()


async def test_a_disconnect_unsubscribes_the_account_at_meta(admin, clean):
    from tests.test_connect import ACCOUNT

    profile_id = await _oauth_connected(admin, clean)
    assert ACCOUNT["user_id"] in (await _oauth(clean))["subscribed"]

    assert (await admin.client.profiles.delete(profile_id)).success is True

    async def unsubscribed():
        oauth = await _oauth(clean)
        return oauth["unsubscribed"] == [ACCOUNT["user_id"]] and not oauth["subscribed"]

    await wait_for(unsubscribed)
    assert (await admin.client.profiles.get(profile_id)).status == "inactive"


async def test_a_disconnect_is_not_held_up_by_meta_and_unsubscribing_is_retried(
    admin, clean, monkeypatch
):
    from app.connections import tasks
    from app.core import ids
    from tests.test_connect import ACCOUNT

    monkeypatch.setattr(tasks, "UNSUBSCRIBE_DELAY_SECONDS", 0.2)
    profile_id = await _oauth_connected(admin, clean)
    await clean.sandbox("POST", "/_sandbox/faults", json={"transient_rate": 1.0})

    assert (await admin.client.profiles.delete(profile_id)).success is True
    assert (await admin.client.profiles.get(profile_id)).status == "inactive"

    # Meta failed it twice (the job's tries are counted by arq)...
    retries = f"arq:retry:unsubscribe:{ids.decode(ids.Kind.PROFILE, profile_id)}"

    async def tried_twice() -> bool:
        return int(await clean.worker.pool.get(retries) or 0) >= 2

    await wait_for(tried_twice)
    assert (await _oauth(clean))["unsubscribed"] == []
    # ...and once Meta answers, the next try unsubscribes it.
    await clean.sandbox("POST", "/_sandbox/faults", json={})

    async def unsubscribed():
        return (await _oauth(clean))["unsubscribed"] == [ACCOUNT["user_id"]]

    await wait_for(unsubscribed)


async def test_erasing_unsubscribes_the_account_at_meta_first(admin, clean):
    from tests.test_connect import ACCOUNT

    profile_id = await _oauth_connected(admin, clean)
    result = await admin.client._request(
        "DELETE", f"/profiles/{profile_id}", params={"erase": "true"}
    )
    assert result == {"success": True}

    async def gone():
        oauth = await _oauth(clean)
        profiles = await scalar(clean, "SELECT count(*) FROM profiles WHERE platform_id = :p",
                                p=ACCOUNT["user_id"])  # fmt: skip
        return oauth["unsubscribed"] == [ACCOUNT["user_id"]] and profiles == 0

    await wait_for(gone)


async def test_a_profile_being_erased_cannot_be_connected_again_until_it_is_gone(account, clean):
    from tests.cli import dmrelay

    add = ("profiles", "add", "--platform", "instagram", "--platform-id", account.platform_id)
    env = {"DMRELAY_ACCESS_TOKEN": "another-token"}
    clean.worker.allow_pick_jobs = False  # the erasure waits
    try:
        result = await account.client._request(
            "DELETE", f"/profiles/{account.profile_id}", params={"erase": "true"}
        )
        assert result == {"success": True}
        refused = await dmrelay(*add, env=env)
        assert refused.code == 1 and "being erased" in refused.stderr
        (group,) = (await account.client.profile_groups.list()).data
        assert group.profiles_count == 0  # hidden already
        with pytest.raises(ConflictError, match="being erased"):
            await account.client.profile_groups.delete(group.id)
        assert await scalar(clean, "SELECT count(*) FROM profiles WHERE erasing_since IS NULL") == 0
    finally:
        clean.worker.allow_pick_jobs = True

    async def gone() -> bool:
        return await scalar(clean, "SELECT count(*) FROM profiles") == 0

    await wait_for(gone)
    done = await dmrelay(*add, env=env)
    assert done.code == 0, done.stderr
    assert (await account.client.profiles.list()).data[0].status == "active"
