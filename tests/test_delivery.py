"""Delivery guarantees with one in-process worker: retries by Meta's error class, order
per chat, unknown outcomes resolved by echoes, throttling, retry on demand."""

from datetime import UTC, datetime, timedelta

import pytest
from postproxy import ValidationError
from sqlalchemy import select

from app.core import ids
from app.messages.models import Message
from app.messages.throttle import _pause_key
from tests.conftest import connect, wait_for
from tests.inbound import received

CUSTOMERS = [f"17000000000000{n:02d}" for n in range(10)]
UNDELIVERED = {"pending", "failed_waiting_for_retry"}


async def faults(stack, **fault_set) -> None:
    await stack.sandbox("POST", "/_sandbox/faults", json=fault_set)


async def sent(stack) -> list[dict]:
    return (await stack.sandbox("GET", "/_sandbox/sent")).json()["data"]


async def settle(client, messages) -> list:
    async def all_settled():
        current = [await client.messages.get(m.id) for m in messages]
        return current if all(m.status not in UNDELIVERED for m in current) else None

    return await wait_for(all_settled, interval=0.05)


async def chats(account, count: int = 1) -> list:
    return [await account.client.chats.create(account.profile_id, c) for c in CUSTOMERS[:count]]


async def test_transient_errors_are_retried_until_published(account, clean):
    await faults(clean, transient_rate=0.25)
    (chat,) = await chats(account)
    messages = [await account.client.messages.send(chat.id, body=f"m{n}") for n in range(20)]
    settled = await settle(account.client, messages)
    assert {m.status for m in settled} == {"published"}
    delivered = [s["message"]["text"] for s in await sent(clean)]
    assert delivered == [f"m{n}" for n in range(20)]  # each once, in order


async def test_a_permanent_error_fails_at_once_and_releases_the_chat(account, clean):
    (chat,) = await chats(account)
    await faults(
        clean,
        recipients={CUSTOMERS[0]: {"code": 10, "error_subcode": 2534022, "message": "window"}},
    )
    first = await account.client.messages.send(chat.id, body="first")
    (failed,) = await settle(account.client, [first])
    assert failed.status == "failed"
    assert failed.error_details.platform_error_code == "10"
    assert failed.error_details.platform_error_subcode == "2534022"
    assert "writes again" in failed.error_message

    await faults(clean)
    second = await account.client.messages.send(chat.id, body="second")
    assert (await settle(account.client, [second]))[0].status == "published"


async def test_retries_hold_back_their_chat_but_not_others_then_give_up(
    account, clean, monkeypatch
):
    max_attempts = clean.settings.max_attempts
    # Retried without end until the other chat's message is seen published, however long
    # that takes on a busy machine: until then, nothing but the retries holds `behind` back.
    monkeypatch.setattr(clean.settings, "max_attempts", 1_000_000)
    blocked, free = await chats(account, 2)
    await faults(
        clean, recipients={CUSTOMERS[0]: {"code": 2, "error_subcode": None, "message": "boom"}}
    )
    stuck = await account.client.messages.send(blocked.id, body="stuck")
    behind = await account.client.messages.send(blocked.id, body="behind")
    other = await account.client.messages.send(free.id, body="other chat")

    assert (await settle(account.client, [other]))[0].status == "published"
    assert (await account.client.messages.get(behind.id)).status == "pending"

    monkeypatch.setattr(clean.settings, "max_attempts", max_attempts)
    stuck, behind = await settle(account.client, [stuck, behind])
    assert stuck.status == "failed"
    # At the cap, or at the attempt under way when the cap came back.
    async with clean.sessionmaker() as session:
        attempts = await session.scalar(
            select(Message.attempts).where(Message.id == ids.decode(ids.Kind.MESSAGE, stuck.id))
        )
    assert attempts >= max_attempts
    assert f"Gave up after {attempts} attempts" in stuck.error_message
    assert stuck.error_details.platform_error_code == "2"
    # Its permanent failure released the chat, and Meta refuses the next one the same way.
    assert behind.status == "failed"


async def test_order_per_chat_is_acceptance_order(account, clean):
    await faults(clean, transient_rate=0.25)
    chat_list = await chats(account, 5)
    accepted = []
    for n in range(60):
        chat = chat_list[n % 5]
        accepted.append(await account.client.messages.send(chat.id, body=f"{chat.id}:{n}"))
    await settle(account.client, accepted)
    received = [s["message"]["text"] for s in await sent(clean)]
    for chat in chat_list:
        mine = [t for t in received if t.startswith(f"{chat.id}:")]
        assert mine == [m.body for m in accepted if m.chat_id == chat.id]


async def test_retry_on_demand_requeues_a_failed_message(account, clean):
    (chat,) = await chats(account)
    await faults(clean, recipients={CUSTOMERS[0]: {"code": 551, "message": "unavailable"}})
    message = await account.client.messages.send(chat.id, body="try again later")
    (failed,) = await settle(account.client, [message])
    assert failed.status == "failed"

    await faults(clean)
    retried = await account.client._request("POST", f"/messages/{message.id}/retry")
    assert retried["status"] == "pending"
    assert retried["error_message"] is None
    (published,) = await settle(account.client, [message])
    assert published.status == "published"

    with pytest.raises(ValidationError, match="Only a failed outbound message"):
        await account.client._request("POST", f"/messages/{message.id}/retry")


async def test_unknown_outcome_with_an_echo_is_not_sent_again(account, clean):
    (chat,) = await chats(account)
    await faults(clean, timeout={"recipients": [CUSTOMERS[0]], "times": 1})
    message = await account.client.messages.send(chat.id, body="did it arrive?")
    (published,) = await settle(account.client, [message])
    records = await sent(clean)
    assert len(records) == 1
    assert published.status == "published"
    assert published.external_id == records[0]["message_id"]
    assert (await account.client.messages.list(chat.id)).total == 1


async def test_unknown_outcome_without_an_echo_is_sent_again(account, clean, caplog):
    (chat,) = await chats(account)
    await faults(clean, timeout={"recipients": [CUSTOMERS[0]], "times": 1}, echo={"mode": "none"})
    message = await account.client.messages.send(chat.id, body="resend me")
    (published,) = await settle(account.client, [message])
    records = await sent(clean)
    # Meta has no idempotency key: without an echo, dmrelay cannot know, and sends again.
    assert [r["message"]["text"] for r in records] == ["resend me", "resend me"]
    assert published.external_id == records[1]["message_id"]
    # And says so, naming the message and why (the fault suite reads this line).
    serial = ids.decode(ids.Kind.MESSAGE, message.id)
    warnings = [r.getMessage() for r in caplog.records if r.name == "app.messages.sender"]
    assert any(
        w.startswith(f"message {serial}: Meta may have it (TimeoutError)") for w in warnings
    ), warnings


@pytest.mark.parametrize("mode, echoes", [("before", 1), ("twice", 2), ("late", 1)])
async def test_echoes_in_any_order_attach_to_the_one_message(account, clean, mode, echoes):
    (chat,) = await chats(account)
    await faults(clean, echo={"mode": mode, "delay_ms": 300})
    messages = [await account.client.messages.send(chat.id, body=f"{mode}{n}") for n in range(3)]
    settled = await settle(account.client, messages)
    assert {m.status for m in settled} == {"published"}
    await received(clean, 3 * echoes)  # late and second echoes too
    listed = await account.client.messages.list(chat.id)
    assert listed.total == 3
    assert sorted(m.external_id for m in listed.data) == sorted(m.external_id for m in settled)


async def test_rate_limit_is_respected_without_throttle_errors(account, clean):
    limit = clean.settings.rate_text_instagram_login
    await faults(clean, rate_limit={"per_second": int(limit)})
    chat_list = await chats(account, 10)
    messages = [
        await account.client.messages.send(chat_list[n % 10].id, body=f"r{n}")
        for n in range(int(limit * 1.5))
    ]
    settled = await settle(account.client, messages)
    assert {m.status for m in settled} == {"published"}
    assert all(m.error_details is None for m in settled)
    async with clean.sessionmaker() as session:
        from sqlalchemy import func, select

        from app.messages.models import Message

        assert await session.scalar(select(func.max(Message.attempts))) == 1


async def test_a_throttled_profile_pauses_alone(clean, monkeypatch):
    # A pause longer than the other profile's send can take, even on a busy machine.
    monkeypatch.setattr(clean.settings, "throttle_pause_seconds", 10.0)
    slow = await connect(clean, platform_id="17841400000000010", token="slow-token")
    fast = await connect(clean, platform_id="17841400000000020", token="fast-token")
    try:
        throttled_customer, waiting_customer = CUSTOMERS[0], CUSTOMERS[1]
        await faults(
            clean,
            recipients={
                throttled_customer: {"code": 613, "error_subcode": 2534040, "message": "rate limit"}
            },
        )
        throttled = await slow.client.chats.create(slow.profile_id, throttled_customer)
        waiting = await slow.client.chats.create(slow.profile_id, waiting_customer)
        other = await fast.client.chats.create(fast.profile_id, waiting_customer)

        first = await slow.client.messages.send(throttled.id, body="hits the throttle")
        await wait_for(lambda: _status_is(slow.client, first.id, "failed_waiting_for_retry"))
        # The pause was set before the failure was stored; it ends at pause_ends or later.
        now = datetime.now(UTC)
        pause_key = _pause_key(ids.decode(ids.Kind.PROFILE, slow.profile_id))
        paused_ms = await clean.worker.pool.pttl(pause_key)
        assert paused_ms > 0
        pause_ends = now + timedelta(milliseconds=paused_ms)
        await faults(clean)  # once the pause is over, Meta takes the slow profile's sends
        held = await slow.client.messages.send(waiting.id, body="held by the pause")
        free = await fast.client.messages.send(other.id, body="not held")

        free, held = await settle(fast.client, [free]) + await settle(slow.client, [held])
        assert free.status == held.status == "published"
        assert held.external_posted_at >= pause_ends
        assert free.external_posted_at < pause_ends
        # Claimed before the pause was found, the held message got its claim and attempt
        # back: sent once, after the pause, without waiting for an echo of a send never made.
        async with clean.sessionmaker() as session:
            attempts = await session.scalar(
                select(Message.attempts).where(Message.id == ids.decode(ids.Kind.MESSAGE, held.id))
            )
        assert attempts == 1
    finally:
        await slow.client.close()
        await fast.client.close()


async def _status_is(client, message_id, status):
    return (await client.messages.get(message_id)).status == status


async def test_sweeper_recovers_messages_whose_jobs_were_lost(account, clean):
    (chat,) = await chats(account)
    clean.worker.allow_pick_jobs = False
    try:
        message = await account.client.messages.send(chat.id, body="lost job")
        await clean.worker.pool.flushdb()  # Redis loses the job
    finally:
        clean.worker.allow_pick_jobs = True
    (published,) = await settle(account.client, [message])
    assert published.status == "published"


async def test_a_chat_has_at_most_two_delivery_jobs_queued(clean):
    from arq.jobs import Job

    from app.core.jobs import JobName, enqueue_first_free
    from app.core.queue import arq_pool

    # A queue of its own, which the running worker does not take jobs from.
    pool = arq_pool(clean.settings, default_queue_name="test:queue")
    try:
        ids = ["deliver:test", "deliver:test:next"]
        taken = [await enqueue_first_free(pool, JobName.SEND_CHAT, (0,), ids) for _ in range(3)]
        assert taken == ["deliver:test", "deliver:test:next", None]
        job = await Job(
            "deliver:test:next", pool, _queue_name="test:queue", _deserializer=pool.job_deserializer
        ).info()
        assert (job.function, job.args) == ("deliver_chat", [0])
        assert await pool.zcard("test:queue") == 2
    finally:
        await pool.delete("test:queue", *(f"arq:job:{i}" for i in ids))
        await pool.aclose()
