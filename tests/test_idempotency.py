import asyncio

import httpx
import pytest
from postproxy import ValidationError
from sqlalchemy import func, select, text

from app.messages.models import Message


async def _count(clean) -> int:
    async with clean.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(Message))


@pytest.fixture
async def chat(account):
    return await account.client.chats.create(account.profile_id, "777")


async def test_same_key_same_body_replays_and_does_nothing_more(account, clean, chat):
    first = await account.client.messages.send(chat.id, body="once", idempotency_key="k-1")
    again = await account.client.messages.send(chat.id, body="once", idempotency_key="k-1")
    assert again.id == first.id
    assert again.status == "pending"  # the first response, replayed as it was
    assert await _count(clean) == 1


async def test_same_key_other_body_is_422(account, clean, chat):
    await account.client.messages.send(chat.id, body="once", idempotency_key="k-2")
    with pytest.raises(ValidationError, match="different request"):
        await account.client.messages.send(chat.id, body="twice", idempotency_key="k-2")
    assert await _count(clean) == 1


async def test_keys_are_per_api_key_and_bounded(account, chat):
    with pytest.raises(ValidationError, match="255"):
        await account.client.messages.send(chat.id, body="x", idempotency_key="k" * 256)
    await account.client.messages.send(chat.id, body="x", idempotency_key="k" * 255)


async def test_a_failed_request_stores_nothing_so_its_key_can_be_retried(account, chat):
    with pytest.raises(ValidationError):
        await account.client.messages.send(chat.id, body="x" * 2000, idempotency_key="k-3")
    message = await account.client.messages.send(chat.id, body="fixed", idempotency_key="k-3")
    assert message.body == "fixed"


async def test_concurrent_repeats_get_409_or_the_replay(account, clean, chat):
    async with httpx.AsyncClient(base_url=account.client.base_url) as http:
        responses = await asyncio.gather(
            *[
                http.post(
                    f"/api/chats/{chat.id}/messages",
                    json={"body": "race"},
                    headers={"Authorization": f"Bearer {account.token}", "Idempotency-Key": "k-4"},
                )
                for _ in range(8)
            ]
        )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {202, 409}
    assert len({r.json()["id"] for r in responses if r.status_code == 202}) == 1
    assert await _count(clean) == 1


async def test_chat_creation_replays_its_201(account):
    async with httpx.AsyncClient(base_url=account.client.base_url) as http:
        request = dict(
            url=f"/api/profiles/{account.profile_id}/chats",
            json={"participant_external_id": "888"},
            headers={"Authorization": f"Bearer {account.token}", "Idempotency-Key": "c-1"},
        )
        first = await http.post(**request)
        replay = await http.post(**request)
    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()


async def test_responses_are_forgotten_after_24_hours(account, clean, chat):
    from sqlalchemy import update

    from app.core.idempotency import IdempotencyRecord, purge_expired

    await account.client.messages.send(chat.id, body="old", idempotency_key="k-old")
    await account.client.messages.send(chat.id, body="new", idempotency_key="k-new")
    async with clean.sessionmaker() as session, session.begin():
        await session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key == "k-old")
            .values(created_at=func.now() - text("interval '25 hours'"))
        )
        assert await purge_expired(session) == 1
    # (The short in-flight locks are long gone 24 h later.)
    for lock in await clean.worker.pool.keys("dmrelay:idempotency:*"):
        await clean.worker.pool.delete(lock)
    # The expired key is free again: a new request with it is a new message.
    again = await account.client.messages.send(chat.id, body="other", idempotency_key="k-old")
    assert again.body == "other"
    assert await _count(clean) == 3


async def test_an_idempotent_send_commits_with_its_stored_response(account, clean, chat):
    # As the route runs it: the key's lookup opens the session's transaction, which the
    # send's raw statement then joins; a rollback must take the message back.
    from app.api_keys.auth import Scope
    from app.core.db import driver_connection
    from app.core.idempotency import IdempotencyRecord
    from app.messages import service
    from app.messages.schemas import MessageSend

    async with clean.sessionmaker() as session:
        assert await session.get(IdempotencyRecord, (0, "never-stored")) is None
        connection = await driver_connection(session)
        await service.send(connection, Scope(0, None), chat.id, MessageSend(body="undone"))
        await session.rollback()
    assert await _count(clean) == 0
