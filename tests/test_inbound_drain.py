"""The drain: stored webhook deliveries applied in batches by one job the acks signal, rather
than a job per delivery. No acknowledged delivery may be left behind (a signal racing the
drain's end, a drain lost with its worker, a crash in the middle of a batch), none applied
twice, and one that cannot be split must not hold the drain."""

import asyncio
from datetime import timedelta

import pytest
from alembic import command
from sqlalchemy import text

from app.core.jobs import Job, JobName, Signal, enqueue, settle, signal, signalled
from app.core.migrate import alembic_config
from app.inbound import parsing, pipeline, repository
from app.inbound.pipeline import BATCH_WEBHOOK_DELIVERIES, DRAIN_SIGNAL
from tests.conftest import WAIT_SECONDS, wait_for
from tests.inbound import T0, customer_events, post_payload, scalar, settled
from tests.test_inbound_batching import message, payload, processor, store_delivery, stored_mids


async def delivery_statuses(stack) -> dict[int, str]:
    async with stack.sessionmaker() as session:
        rows = await session.execute(text("SELECT id, status FROM webhook_deliveries"))
        return dict(rows.all())


async def test_acks_ask_for_a_drain_not_a_job_each(account, clean):
    clean.worker.allow_pick_jobs = False  # the jobs stay queued, to count
    try:
        for i in range(5):
            await post_payload(clean, payload(message("701", f"aWdf_d{i}", T0 + i)))
        queued = [job.function for job in await clean.worker.pool.queued_jobs()]
        # One drain (another only if the signal lapsed between two acks, no drain renewing it).
        assert 1 <= queued.count(JobName.DRAIN_WEBHOOKS) < 5
        assert JobName.PROCESS_WEBHOOK not in queued
    finally:
        clean.worker.allow_pick_jobs = True
    await settled(clean)
    assert sorted(await stored_mids(clean)) == [f"aWdf_d{i}" for i in range(5)]

    async def drain_settled() -> bool:  # the next ack asks for a drain again
        return await clean.worker.pool.get(DRAIN_SIGNAL.counter) is None

    await wait_for(drain_settled)


async def test_a_backlog_is_drained_in_batches_oldest_first(account, clean):
    count = BATCH_WEBHOOK_DELIVERIES * 2 + 7
    ids = [
        await store_delivery(clean, payload(message("702", f"aWdf_b{i:03d}", T0)))
        for i in range(count)
    ]
    await processor(clean).drain()

    assert set((await delivery_statuses(clean)).values()) == {"processed"}
    # Same time, same chat: stored in the order they were received.
    assert await stored_mids(clean) == [f"aWdf_b{i:03d}" for i in range(count)]
    assert len(ids) == await scalar(clean, "SELECT count(*) FROM customer_events")


async def test_a_signal_while_the_drain_ends_makes_it_look_again(clean):
    pool = clean.worker.pool
    drain = Signal("test:drain", timedelta(seconds=3), JobName.DRAIN_WEBHOOKS)
    await signal(pool, drain, "test:drain:1")
    # It lapses unless a running drain renews it: a drain lost with its worker holds up the
    # next one only that long.
    assert 0 < await pool.pttl(drain.counter) <= 3000
    seen = await signalled(pool, drain)
    # An ack counts after the drain read the signal, before it found the table empty.
    await signal(pool, drain, "test:drain:2")
    assert not await settle(pool, drain, seen)
    seen = await signalled(pool, drain)
    assert await settle(pool, drain, seen)
    assert await pool.get(drain.counter) is None
    # The first ack after that asks for a drain again; only the first one did before.
    queued = {job.job_id for job in await pool.queued_jobs()}
    assert "test:drain:1" in queued and "test:drain:2" not in queued
    await signal(pool, drain, "test:drain:3")
    assert "test:drain:3" in {job.job_id for job in await pool.queued_jobs()}
    await pool.delete(drain.counter)


async def test_a_crash_in_the_middle_of_a_batch_loses_and_repeats_nothing(
    account, clean, monkeypatch
):
    for i in range(3):
        await store_delivery(
            clean,
            payload(*(message(f"71{j}", f"aWdf_c{i}_{j}", T0 + i) for j in range(4))),
        )
    inside, real = asyncio.Event(), repository.chats_of

    async def stalled(session, keys):
        await real(session, keys)
        inside.set()
        await asyncio.Event().wait()  # the worker dies here, its batch claimed, not committed

    monkeypatch.setattr(repository, "chats_of", stalled)
    drain = asyncio.create_task(processor(clean).drain())
    await asyncio.wait_for(inside.wait(), WAIT_SECONDS)
    drain.cancel()
    with pytest.raises(asyncio.CancelledError):
        await drain
    assert set((await delivery_statuses(clean)).values()) == {"received"}
    assert await stored_mids(clean) == []

    monkeypatch.setattr(repository, "chats_of", real)
    await processor(clean).drain()
    assert len(await stored_mids(clean)) == 12
    types = [t for t, _ in await customer_events(clean)]
    assert types == ["message.received"] * 12


async def test_a_delivery_that_cannot_be_split_does_not_hold_the_drain(account, clean, monkeypatch):
    real = parsing.parse_body

    def parse(body):
        if "aWdf_stuck" in body:
            raise RuntimeError("a bug")
        return real(body)

    monkeypatch.setattr("app.inbound.split.parse_body", parse)
    stuck = await store_delivery(clean, payload(message("721", "aWdf_stuck", T0)))
    good = await store_delivery(clean, payload(message("722", "aWdf_good", T0)))
    await asyncio.wait_for(processor(clean).drain(), WAIT_SECONDS)

    # Left `received` for the sweep (a bug fixed, it applies), the other applied.
    assert await delivery_statuses(clean) == {stuck: "received", good: "processed"}
    assert await stored_mids(clean) == ["aWdf_good"]


async def test_a_job_of_one_delivery_queued_before_the_drain_still_applies(account, clean):
    delivery = await store_delivery(clean, payload(message("731", "aWdf_old", T0)))
    job = Job(JobName.PROCESS_WEBHOOK, (delivery,), f"webhook:{delivery}")
    await enqueue(clean.worker.pool, job)

    async def applied():
        return await stored_mids(clean) == ["aWdf_old"]

    await wait_for(applied)


async def test_migration_0018_goes_down_and_up(clean):
    config = alembic_config(clean.settings)
    column = (
        "SELECT count(*) FROM information_schema.columns "
        "WHERE table_name = 'webhook_deliveries' AND column_name = 'traceparent'"
    )
    await asyncio.to_thread(command.downgrade, config, "0017")
    try:
        assert await scalar(clean, column) == 0
    finally:
        await asyncio.to_thread(command.upgrade, config, "head")
    assert await scalar(clean, column) == 1


async def test_a_long_drain_hands_over_to_a_new_job(account, clean, monkeypatch):
    """arq cancels a job past its timeout: a drain under a steady stream ends after a while,
    leaving the signal up and a job of its own to drain on."""
    monkeypatch.setattr(pipeline, "DRAIN_SECONDS", 0.0)
    await store_delivery(clean, payload(message("741", "aWdf_h1", T0)))
    clean.worker.allow_pick_jobs = False
    try:
        await processor(clean).drain()
        queued = [job.job_id or "" for job in await clean.worker.pool.queued_jobs()]
        assert any(job_id.startswith("webhooks:drain:handover:") for job_id in queued)
    finally:
        clean.worker.allow_pick_jobs = True
    assert await stored_mids(clean) == ["aWdf_h1"]
    await store_delivery(clean, payload(message("741", "aWdf_h2", T0 + 1)))

    async def drained_on() -> bool:
        return await stored_mids(clean) == ["aWdf_h1", "aWdf_h2"]

    await wait_for(drained_on)
