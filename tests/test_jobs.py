"""Jobs in Redis are msgpack, plain data: a job that is anything else, a pickle above all
(whose loading runs code of the writer's choosing), is dropped by the worker unread."""

import asyncio
import functools
import os
import pickle
import signal
from pathlib import Path

import msgpack
import pytest
from arq.constants import default_queue_name, job_key_prefix
from arq.jobs import deserialize_job
from arq.utils import timestamp_ms

from app.core import queue
from app.core.jobs import Job, JobName, enqueue
from app.messages.sender import request_send
from app.worker import WorkerSettings
from tests.conftest import wait_for

# What each job kind is enqueued with (see its enqueue site): ids, and lists of ids or keys.
JOB_ARGS = {
    "deliver_chat": (7,),
    "process_webhook": (8,),
    "drain_webhooks": (),
    "refresh_participants": ([1, 2],),
    "mirror_attachment": (9, 0),
    "check_story_mention": (9, 0, 2),
    "delete_media": (["ab/cd.png", "ef/gh.mp4"],),
    "sync_chats": (3,),
    "unsubscribe_account": (4,),
    "erase_profile": (5,),
}


class _RunsCode:
    """Unpickled, it makes a directory: the proof that a pickle's code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


async def test_a_pickled_job_is_dropped_without_running_its_code(clean, tmp_path, caplog):
    marker = tmp_path / "the pickle ran"
    job = {"t": 1, "f": "deliver_chat", "a": (_RunsCode(marker),), "k": {}, "et": timestamp_ms()}
    redis = clean.worker.pool
    job_id = "planted-pickle"
    await redis.set(job_key_prefix + job_id, pickle.dumps(job), px=60_000)
    await redis.zadd(default_queue_name, {job_id: timestamp_ms()})

    async def dropped() -> bool:
        queued = await redis.zscore(default_queue_name, job_id)
        return queued is None and not await redis.exists(job_key_prefix + job_id)

    await wait_for(dropped, timeout=15)
    assert not marker.exists()
    assert f"deserializing job {job_id} failed" in caplog.text


async def test_every_job_kind_is_enqueued_as_plain_data_and_read_back(clean):
    assert {function.name for function in WorkerSettings.functions} == set(JOB_ARGS)
    # A queue of its own, which the running worker does not take jobs from.
    pool = queue.arq_pool(clean.settings, default_queue_name="test:jobs")
    expected = {f"test:{f}": (f, args) for f, args in JOB_ARGS.items()}
    expected["deliver:11"] = ("deliver_chat", (11,))
    try:
        for function, args in JOB_ARGS.items():
            assert await enqueue(pool, Job(JobName(function), args, f"test:{function}"))
        await request_send(pool, 11)  # the express lane's enqueue (one Lua script)
        for job_id, (function, args) in expected.items():
            stored = await pool.get(job_key_prefix + job_id)
            # Plain msgpack, which anything can read and nothing runs code to read.
            plain = msgpack.unpackb(stored)
            assert (plain["f"], plain["a"]) == (function, list(args))
            # And as the worker reads it.
            read = deserialize_job(stored, deserializer=WorkerSettings.job_deserializer)
            assert (read.function, tuple(read.args)) == (function, args)
    finally:
        await pool.delete("test:jobs", *(job_key_prefix + job_id for job_id in expected))
        await pool.aclose()


async def test_a_worker_told_to_stop_stops_even_if_its_cancellation_is_lost(stack):
    """arq stops a worker by cancelling its main task; on Python 3.11 redis-py can swallow
    that cancellation (asyncio.wait_for returning a send that finished as it was cancelled).
    The worker stops all the same, at its next poll, instead of polling on for ever."""
    from app.worker import create_worker

    worker = create_worker(
        cron_jobs=None,
        on_startup=None,
        on_shutdown=None,
        on_poll=None,
        queue_name="dmrelay:test:stop",
        handle_signals=False,
    )
    main = asyncio.create_task(worker.async_run())
    try:

        async def polling() -> bool:
            return worker.main_task is not None and "redis" in worker.ctx

        await wait_for(polling)

        class LostCancellation:
            def cancel(self) -> bool:
                return False

        worker.main_task = LostCancellation()  # the cancellation arq sends goes nowhere
        worker.handle_sig_wait_for_completion(signal.SIGTERM)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(main, 10)
    finally:
        main.cancel()
        await worker.close()


async def test_a_send_job_and_a_drain_start_when_enqueued_and_a_webhook_job_waits_for_the_poll(
    settings,
):
    """A send's job, and the drain of Meta's webhooks an ack signals, are published on the
    queue's wake channel as they are enqueued, and the worker starts them then: here the
    worker polls once an hour, so only the wake can start them. A job of another kind (the
    webhook delivery's of versions before the drain) is not announced: it stays queued."""
    from datetime import timedelta

    from arq.constants import in_progress_key_prefix

    from app.core.jobs import Signal, enqueue_first_free, signal, task
    from app.core.worker import ResilientWorker

    queue_name = "dmrelay:test:wake"
    drain = Signal("dmrelay:test:wake:drain", timedelta(seconds=3), JobName.DRAIN_WEBHOOKS)
    started: list[tuple[str, int]] = []

    async def record(name: str, ctx: dict, item: int = 0) -> None:
        started.append((name, item))

    worker = ResilientWorker(
        functions=[
            task(functools.partial(record, "send"), JobName.SEND_CHAT),
            task(functools.partial(record, "webhook"), JobName.PROCESS_WEBHOOK),
            task(functools.partial(record, "drain"), JobName.DRAIN_WEBHOOKS),
        ],
        redis_pool=queue.arq_pool(settings, default_queue_name=queue_name),
        queue_name=queue_name,
        poll_delay=3600,
        handle_signals=False,
        job_serializer=queue.pack_job,
        job_deserializer=queue.unpack_job,
    )
    pool = queue.arq_pool(settings, default_queue_name=queue_name)
    await pool.delete(queue_name)
    main = asyncio.create_task(worker.async_run())
    try:
        # Its first poll is behind it (it saw an empty queue), and it listens.
        async def polled() -> bool:
            return worker.last_poll is not None

        async def listening() -> bool:
            return await _subscribed(pool, queue_name)

        async def sent() -> bool:
            return started == [("send", 1)]

        async def drained() -> bool:
            return started == [("send", 1), ("drain", 0)]

        await wait_for(polled)
        await wait_for(listening)
        await enqueue_first_free(pool, JobName.PROCESS_WEBHOOK, (2,), ["wake-test:webhook"])
        await request_send(pool, 1)
        await wait_for(sent)
        await signal(pool, drain, "wake-test:drain")
        await wait_for(drained)
        assert await pool.zscore(queue_name, "wake-test:webhook") is not None
        assert not await pool.exists(in_progress_key_prefix + "wake-test:webhook")
    finally:
        main.cancel()
        await worker.close()
        await pool.delete(queue_name, "arq:job:wake-test:webhook", drain.counter)
        await pool.aclose()


async def _subscribed(pool, queue_name: str) -> bool:
    from app.core.jobs import wake_channel

    counts = dict(await pool.pubsub_numsub(wake_channel(queue_name)))
    return counts.get(wake_channel(queue_name).encode(), 0) > 0


async def test_a_poll_skips_jobs_running_in_other_workers_in_one_round_trip(settings):
    """With M workers each runs a Mth of the long send jobs, and every poll reads the others'
    from the queue's head: they are skipped after one MGET, not after arq's four round trips
    (WATCH, EXISTS, ZSCORE, UNWATCH) each. A job no worker has taken still starts."""
    from arq.constants import in_progress_key_prefix

    from app.core.jobs import task
    from app.core.worker import ResilientWorker

    queue_name = "dmrelay:test:elsewhere"
    started: list[int] = []

    async def record(ctx: dict, item: int) -> None:
        started.append(item)

    worker = ResilientWorker(
        functions=[task(record, JobName.SEND_CHAT)],
        redis_pool=queue.arq_pool(settings, default_queue_name=queue_name),
        queue_name=queue_name,
        handle_signals=False,
        job_serializer=queue.pack_job,
        job_deserializer=queue.unpack_job,
    )
    pool = queue.arq_pool(settings, default_queue_name=queue_name)
    taken = [f"elsewhere:{n}" for n in range(40)]
    try:
        await pool.delete(queue_name)
        for n, job_id in enumerate([*taken, "elsewhere:free"]):
            await enqueue(pool, Job(JobName.SEND_CHAT, (n,), job_id))
        for job_id in taken:  # as another worker marks the jobs it runs
            await pool.set(in_progress_key_prefix + job_id, b"1", px=60_000)
        watches = await _calls(pool, "watch")
        await worker.start_jobs(await pool.zrange(queue_name, 0, -1))

        async def free_one_ran() -> bool:
            return started == [len(taken)]

        await wait_for(free_one_ran)
        # The free job's own check is arq's; the 40 taken ones cost none.
        assert await _calls(pool, "watch") - watches < len(taken)
    finally:
        await worker.close()
        await pool.delete(
            queue_name,
            *[in_progress_key_prefix + job_id for job_id in taken],
            *[job_key_prefix + job_id for job_id in [*taken, "elsewhere:free"]],
        )
        await pool.aclose()


async def _calls(pool, command: str) -> int:
    stats = await pool.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
