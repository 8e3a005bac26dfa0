"""Sending when a chat's lease runs out mid-attempt: the worker that takes the chat over
never sends a message again while the first attempt may still reach Meta, the first worker
stops once it knows, and every status change is checked against the state it expects."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from app.core import ids
from app.core.db import create_driver_pool, create_engine
from app.core.queue import arq_pool
from app.messages.sender import Sender
from app.messages.throttle import ProfileThrottle
from app.meta.graph import GraphClient, create_session
from tests.conftest import Stack, wait_for
from tests.inbound import emit, event
from tests.test_delivery import CUSTOMERS, faults, sent, settle

# Sends slow enough that a call outlasts the time the test takes to end its lease.
LATENCY_MS = 2500


@pytest.fixture
async def workers(clean: Stack) -> AsyncIterator[list[Sender]]:
    """Two senders of the test's own (the harness's worker takes no jobs
    meanwhile), with a Graph timeout longer than the sandbox's latency."""
    settings = clean.settings.model_copy(
        update={"graph_timeout_seconds": 10.0, "rate_audio_video": 0.5}
    )
    engine = create_engine(settings, pool_size=2)
    redis = arq_pool(settings)
    made = []
    for _ in range(2):
        http = create_session(settings.graph_timeout_seconds)
        db = await create_driver_pool(settings, size=4)
        made.append((http, db, Sender(db, engine, GraphClient(settings, http), settings, redis)))
    clean.worker.allow_pick_jobs = False
    try:
        yield [sender for _, _, sender in made]
    finally:
        clean.worker.allow_pick_jobs = True
        for http, db, _ in made:
            await http.close()
            await db.close()
        await redis.aclose()
        await engine.dispose()


async def run_sql(stack: Stack, sql: str, **params) -> object:
    async with stack.sessionmaker() as session, session.begin():
        result = await session.execute(text(sql), params)
        return result.scalar() if result.returns_rows else None


async def claimed(stack: Stack, message_id: int) -> bool:
    return await run_sql(
        stack,
        "SELECT claimed_until IS NOT NULL FROM messages WHERE id = :id",
        id=message_id,
    )


async def lease_runs_out(stack: Stack, chat_id: int) -> None:
    """As if the worker holding the chat had stalled past its lease."""
    await run_sql(
        stack,
        "UPDATE chats SET send_lease_until = now() - interval '1 second' WHERE id = :id",
        id=chat_id,
    )


def serial(public_id: str) -> int:
    return ids.decode(ids.Kind.MESSAGE, public_id)


async def take_over(
    clean: Stack, first: Sender, second: Sender, chat_id: int, message_id: int
) -> None:
    """The first worker's lease on the chat runs out once it has claimed the message; the
    second takes the chat over. Then the harness's worker finishes the chat from the jobs
    queued meanwhile, with the sandbox's faults cleared."""
    sending = asyncio.create_task(first.send_chat(chat_id))
    await wait_for(lambda: claimed(clean, message_id))
    await lease_runs_out(clean, chat_id)
    await second.send_chat(chat_id)
    await sending
    await faults(clean)
    clean.worker.allow_pick_jobs = True


async def test_a_send_that_outlives_its_lease_is_not_sent_again(account, workers, clean):
    first_worker, second_worker = workers
    chat = await account.client.chats.create(account.profile_id, CUSTOMERS[0])
    await faults(clean, latency_ms=LATENCY_MS)
    first = await account.client.messages.send(chat.id, body="first")
    second = await account.client.messages.send(chat.id, body="second")
    chat_id = ids.decode(ids.Kind.CHAT, chat.id)

    # The first worker's call to Meta is under way when its lease runs out.
    await take_over(clean, first_worker, second_worker, chat_id, serial(first.id))
    published = await settle(account.client, [first, second])
    assert [m.status for m in published] == ["published", "published"]
    assert [s["message"]["text"] for s in await sent(clean)] == ["first", "second"]


async def test_a_send_waiting_for_its_rate_limit_slot_when_its_lease_runs_out_goes_once(
    account, workers, clean
):
    # Two jobs of one worker process: they share its rate-limit bookkeeping.
    first_worker = second_worker = workers[0]
    chat = await account.client.chats.create(account.profile_id, CUSTOMERS[0])
    # dmrelay's pacing (a video every 2 s here) keeps the send waiting for its slot, longer
    # than the second worker waits for an echo before it would send again.
    await faults(clean, rate_limit={"audio_video_per_second": 1})
    message = await account.client.messages.send(chat.id, media=["https://cdn.example/v.mp4"])
    chat_id = ids.decode(ids.Kind.CHAT, chat.id)
    profile_id = ids.decode(ids.Kind.PROFILE, account.profile_id)
    # Two sends of the profile (answered at once) ahead of it: its slot is 2 s away.
    throttle = ProfileThrottle(first_worker.redis, first_worker.settings)
    for _ in range(2):
        async with throttle.sending(profile_id, "instagram_login", "video", patience=5):
            pass

    await take_over(clean, first_worker, second_worker, chat_id, serial(message.id))
    (published,) = await settle(account.client, [message])
    assert published.status == "published"
    records = await sent(clean)
    assert len(records) == 1
    assert published.external_id == records[0]["message_id"]


async def test_an_echo_that_published_a_message_mid_attempt_stands(account, workers, clean):
    worker = workers[0]
    chat = await account.client.chats.create(account.profile_id, CUSTOMERS[0])
    # The send fails at Meta, slowly; meanwhile the message's echo publishes it.
    await faults(
        clean,
        latency_ms=LATENCY_MS,
        recipients={CUSTOMERS[0]: {"code": 2, "message": "transient"}},
    )
    message = await account.client.messages.send(chat.id, body="echoed first")
    sending = asyncio.create_task(worker.send_chat(ids.decode(ids.Kind.CHAT, chat.id)))
    await wait_for(lambda: claimed(clean, serial(message.id)))
    # The harness's worker applies the echo (the chat's lease keeps it from sending).
    clean.worker.allow_pick_jobs = True
    [mid] = await emit(clean, event("echo", sender=CUSTOMERS[0], text="echoed first"))
    assert (await account.client.messages.get(message.id)).status == "published"
    assert not sending.done()
    await sending  # the attempt fails

    current = await account.client.messages.get(message.id)
    assert (current.status, current.external_id, current.error_message) == (
        "published",
        mid,
        None,
    )


async def test_a_chat_sent_past_its_time_goes_on_in_a_fresh_job_any_worker_may_take(
    account, workers, clean, monkeypatch
):
    """A worker sends a chat's messages for DRAIN_SECONDS at most, then releases the chat
    and enqueues a fresh job for it, announced to every worker, so a backlog taken by one
    worker spreads to the others. Each job makes one attempt at least (here the time is
    always up), so the chat moves on, in order, whichever worker takes it next."""
    from arq.constants import default_queue_name

    from app.core.jobs import wake_channel
    from app.messages import sender
    from tests.test_delivery import chats

    monkeypatch.setattr(sender, "DRAIN_SECONDS", 0.0)
    chat = (await chats(account))[0]
    for n in range(3):
        await account.client.messages.send(chat.id, body=f"handed-over-{n}")
    chat_id = ids.decode(ids.Kind.CHAT, chat.id)
    first, second = workers
    redis = first.redis
    wakes = redis.pubsub()
    await wakes.subscribe(wake_channel(default_queue_name))
    try:
        for worker, sent_so_far in ((first, 1), (second, 2), (first, 3)):
            await worker.send_chat(chat_id)
            texts = [s["message"]["text"] for s in await sent(clean)]
            assert texts == [f"handed-over-{n}" for n in range(sent_so_far)]
        # Each hand-over's job, queued and announced (the last job found the chat sent).
        queued = [job.decode() for job in await redis.zrange(default_queue_name, 0, -1)]
        continuations = [job for job in queued if job.startswith(f"continue:{chat_id}:")]
        assert len(continuations) == 2
        announced: set[str] = set()

        async def both_announced() -> bool:
            # (A subscription's confirmation reads as None.)
            message = await wakes.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                announced.add(message["data"].decode())
            return set(continuations) <= announced

        await wait_for(both_announced)
    finally:
        await wakes.aclose()


async def test_a_worker_hands_half_its_chats_to_an_idle_one(account, workers, clean):
    """A worker that drains chats while another drains none (marked so in Redis at its
    poll) hands half of them over, each after its next send, to fresh jobs the idle worker
    may take; it does not share with itself, and not while nobody is idle."""
    from arq.constants import default_queue_name

    from app.messages.sharing import IDLE_KEY
    from tests.test_delivery import chats

    first, second = workers
    redis = first.redis
    await redis.delete(IDLE_KEY)
    await faults(clean, latency_ms=300)
    two = await chats(account, 2)
    for chat in two:
        for n in range(4):
            await account.client.messages.send(chat.id, body=f"{chat.id}:{n}")
    chat_ids = [ids.decode(ids.Kind.CHAT, chat.id) for chat in two]
    draining = [asyncio.create_task(first.send_chat(chat_id)) for chat_id in chat_ids]

    async def both_draining() -> bool:
        return first.sharing.draining == 2

    await wait_for(both_draining)
    await first.sharing.look()  # nobody idle: nothing to share
    assert not first.sharing.hand_over()
    await second.sharing.look()  # drains nothing: marks itself idle
    await first.sharing.look()
    done, pending = await asyncio.wait(draining, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1 and len(pending) == 1
    queued = [job.decode() for job in await redis.zrange(default_queue_name, 0, -1)]
    handed = [c for c in chat_ids if any(j.startswith(f"continue:{c}:") for j in queued)]
    assert len(handed) == 1
    await faults(clean)
    await second.send_chat(handed[0])
    await asyncio.wait_for(pending.pop(), 30)
    texts = [s["message"]["text"] for s in await sent(clean)]
    for chat in two:
        assert [t for t in texts if t.startswith(f"{chat.id}:")] == [
            f"{chat.id}:{n}" for n in range(4)
        ]
    await redis.delete(IDLE_KEY)
