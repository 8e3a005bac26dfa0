"""The one-call send: POST /api/profiles/{id}/messages with recipient_id finds or creates the
chat, then sends in it, with the same rules as a send in a chat."""

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select, update

from app.chats.models import Chat
from app.messages.models import Message
from app.profiles.models import Profile, ProfileStatus
from tests.conftest import connect, wait_for

CUSTOMER = "1602510301006188"


async def _post(stack, account, json, **headers):
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        return await http.post(
            f"/api/profiles/{account.profile_id}/messages",
            json=json,
            headers={"Authorization": f"Bearer {account.token}", **headers},
        )


async def _counts(stack) -> tuple[int, int]:
    async with stack.sessionmaker() as session:
        chats = await session.scalar(select(func.count()).select_from(Chat))
        messages = await session.scalar(select(func.count()).select_from(Message))
    return chats, messages


async def test_one_call_creates_the_chat_and_sends(account, clean):
    response = await _post(clean, account, {"recipient_id": CUSTOMER, "body": "Your order ships"})
    assert response.status_code == 202, response.text
    message = response.json()
    assert message["status"] == "pending" and message["direction"] == "outbound"
    chat = await account.client.chats.get(message["chat_id"])
    assert chat.participant_external_id == CUSTOMER
    assert chat.profile_id == account.profile_id

    async def published():
        got = await account.client.messages.get(message["id"])
        return got if got.status == "published" else None

    await wait_for(published)
    sent = (await clean.sandbox("GET", "/_sandbox/sent")).json()["data"]
    assert [(s["recipient_id"], s["message"]) for s in sent] == [
        (CUSTOMER, {"text": "Your order ships"})
    ]

    # The same recipient again: the same chat.
    again = await _post(
        clean, account, {"recipient_id": CUSTOMER, "media": ["https://cdn.example/a.png"]}
    )
    assert again.status_code == 202, again.text
    assert again.json()["chat_id"] == message["chat_id"]
    assert await _counts(clean) == (1, 2)


async def test_one_call_refusals_change_nothing(account, clean):
    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    async with clean.sessionmaker() as session, session.begin():
        old = datetime.now(UTC) - timedelta(days=2)
        await session.execute(update(Chat).values(last_inbound_at=old))

    closed = await _post(clean, account, {"recipient_id": CUSTOMER, "body": "late"})
    assert closed.status_code == 422, closed.text
    assert "24" in closed.json()["error"] and closed.json()["errors"] == []

    # A new recipient, refused for its body: its chat is not created either.
    bad_body = await _post(clean, account, {"recipient_id": "42", "body": "   "})
    assert bad_body.status_code == 422
    assert [e["field"] for e in bad_body.json()["errors"]] == ["body"]

    bad_recipient = await _post(clean, account, {"recipient_id": "not-an-igsid", "body": "hi"})
    assert bad_recipient.status_code == 422
    assert [e["field"] for e in bad_recipient.json()["errors"]] == ["recipient_id"]

    missing = await _post(clean, account, {"body": "hi"})
    assert missing.status_code == 422
    assert [e["field"] for e in missing.json()["errors"]] == ["recipient_id"]

    # Refused after the new chat was made (the profile is not active): it is rolled back.
    async with clean.sessionmaker() as session, session.begin():
        await session.execute(update(Profile).values(status=ProfileStatus.EXPIRED))
    inactive = await _post(clean, account, {"recipient_id": "43", "body": "hi"})
    assert inactive.status_code == 422
    assert "expired" in inactive.json()["error"]

    assert await _counts(clean) == (1, 0)
    assert (await account.client.chats.get(chat.id)).id == chat.id


async def test_one_call_sees_only_the_keys_profiles(account, clean):
    other = await connect(clean, platform_id="17841400000000002", group="other", key_group="other")
    try:
        response = await _post(clean, other, {"recipient_id": CUSTOMER, "body": "hi"})
        assert response.status_code == 202
        foreign = await _post(
            clean,
            type(other)(other.client, other.token, account.profile_id, other.platform_id),
            {"recipient_id": CUSTOMER, "body": "hi"},
        )
        assert foreign.status_code == 404
        assert foreign.json()["error"] == "Profile not found"
    finally:
        await other.client.close()
    assert await _counts(clean) == (1, 1)


async def test_one_call_replays_with_an_idempotency_key(account, clean):
    first = await _post(
        clean, account, {"recipient_id": CUSTOMER, "body": "once"}, **{"Idempotency-Key": "r-1"}
    )
    again = await _post(
        clean, account, {"recipient_id": CUSTOMER, "body": "once"}, **{"Idempotency-Key": "r-1"}
    )
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert await _counts(clean) == (1, 1)
