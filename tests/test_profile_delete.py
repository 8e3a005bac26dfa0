"""DELETE /api/profiles/{id}: a disconnect stops sends and webhooks and keeps the history;
with erase=true nothing of the profile is left anywhere (the database is searched whole)."""

import time
import uuid

import pytest
from postproxy import NotFoundError, ValidationError

from tests.conftest import empty, wait_for, worker_idle
from tests.inbound import customer_events, post_payload, scalar, settled
from tests.test_unsend_erasure import (
    customer_message,
    database_dump,
    delivery,
    media_files,
    secret,
)

CUSTOMER = "1700000000000401"


async def test_a_disconnect_stops_sends_and_webhooks_and_keeps_history(account, clean):
    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    sent = await account.client.messages.send(chat.id, body="delivered before")
    await wait_for(
        lambda: _status_is(account, sent.id, "published"),
    )
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
    with pytest.raises(NotFoundError):
        await account.client.profiles.get(account.profile_id)
    with pytest.raises(NotFoundError):
        await account.client.chats.get(chat.id)

    async def media_erased():
        pending = await scalar(clean, "SELECT count(*) FROM media_deletions")
        return key not in media_files(clean) and pending == 0

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
