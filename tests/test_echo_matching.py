"""An echo is ours by Meta's id first; by content only when exactly one message in flight
could be it."""

from sqlalchemy import text

from app.core import ids
from tests.conftest import wait_for
from tests.inbound import emit, event
from tests.test_delivery import CUSTOMERS

# As after a failed first attempt, the second under way.
RETRIED = (
    "UPDATE messages SET status = 'failed_waiting_for_retry', attempts = 2, "
    "error_message = 'Meta had a temporary error. Retrying (attempt 1 of 8).', "
    """error_details = '{"platform_error_code": "2"}', """
    "next_attempt_at = now() - interval '1 second'"
)


async def in_flight(clean, chat_id: int, retried: bool = False) -> None:
    """The chat's messages as if being sent right now, by a worker holding the chat
    (`retried`: on their second attempt)."""
    async with clean.sessionmaker() as session, session.begin():
        if retried:
            await session.execute(text(RETRIED))
        await session.execute(
            text(
                "UPDATE chats SET send_lease_until = now() + interval '1 minute', "
                "send_lease_owner = 1 WHERE id = :id"
            ),
            {"id": chat_id},
        )
        await session.execute(
            text("UPDATE messages SET claimed_until = now() + interval '1 minute'")
        )


async def published(client, message_id: str):
    """The message, once it is published."""

    async def done():
        current = await client.messages.get(message_id)
        return current if current.status == "published" else None

    return await wait_for(done)


async def test_an_echo_that_two_messages_could_be_pairs_with_neither(account, clean):
    chat = await account.client.chats.create(account.profile_id, CUSTOMERS[0])
    chat_id = ids.decode(ids.Kind.CHAT, chat.id)
    clean.worker.allow_pick_jobs = False
    try:
        first = await account.client.messages.send(chat.id, media=["https://cdn.example/1.png"])
        second = await account.client.messages.send(chat.id, media=["https://cdn.example/2.png"])
        await in_flight(clean, chat_id)
    finally:
        clean.worker.allow_pick_jobs = True

    # An image sent from the Instagram app meanwhile (or one of ours: which, nothing says).
    [mid] = await emit(clean, event("echo", sender=CUSTOMERS[0], type="image"))

    for message in (first, second):
        current = await account.client.messages.get(message.id)
        assert (current.status, current.external_id) == ("pending", None)
    listed = await account.client.messages.list(chat.id)
    assert listed.total == 3
    [echo] = [m for m in listed.data if m.external_id == mid]
    assert echo.status == "published"


async def test_an_echo_that_one_message_could_be_pairs_with_it(account, clean):
    chat = await account.client.chats.create(account.profile_id, CUSTOMERS[0])
    clean.worker.allow_pick_jobs = False
    try:
        only = await account.client.messages.send(chat.id, media=["https://cdn.example/1.png"])
        await in_flight(clean, ids.decode(ids.Kind.CHAT, chat.id))
    finally:
        clean.worker.allow_pick_jobs = True

    [mid] = await emit(clean, event("echo", sender=CUSTOMERS[0], type="image"))

    assert (await published(account.client, only.id)).external_id == mid
    assert (await account.client.messages.list(chat.id)).total == 1


async def test_an_echo_publishes_a_retried_message_as_the_send_answer_would(account, clean):
    """Published by its echo, a message keeps nothing of the attempt that failed before:
    as when the send's answer publishes it (SQL publish_send, both ways)."""
    chat = await account.client.chats.create(account.profile_id, CUSTOMERS[0])
    clean.worker.allow_pick_jobs = False
    try:
        message = await account.client.messages.send(chat.id, body="second try")
        await in_flight(clean, ids.decode(ids.Kind.CHAT, chat.id), retried=True)
    finally:
        clean.worker.allow_pick_jobs = True

    [mid] = await emit(clean, event("echo", sender=CUSTOMERS[0], text="second try"))

    current = await published(account.client, message.id)
    assert (current.external_id, current.error_message, current.error_details) == (mid, None, None)
    assert current.external_posted_at is not None
    async with clean.sessionmaker() as session:
        left = await session.execute(
            text("SELECT claimed_until, next_attempt_at FROM messages WHERE id = :id"),
            {"id": ids.decode(ids.Kind.MESSAGE, message.id)},
        )
        assert tuple(left.one()) == (None, None)
