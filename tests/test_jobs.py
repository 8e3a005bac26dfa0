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


async def test_a_send_job_starts_when_enqueued_and_a_webhook_job_waits_for_the_poll(settings):
    """A send's job is published on the queue's wake channel as it is enqueued, and the
    worker starts it then: here the worker polls once an hour, so only the wake can start
    it. A webhook delivery's job is not announced (its jobs gain from gathering for the
    next poll): it stays queued."""
    from arq.constants import in_progress_key_prefix

    from app.core.jobs import enqueue_first_free, task
    from app.core.worker import ResilientWorker

    queue_name = "dmrelay:test:wake"
    started: list[tuple[str, int]] = []

    async def record(name: str, ctx: dict, item: int) -> None:
        started.append((name, item))

    worker = ResilientWorker(
        functions=[
            task(functools.partial(record, "send"), JobName.SEND_CHAT),
            task(functools.partial(record, "webhook"), JobName.PROCESS_WEBHOOK),
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

        await wait_for(polled)
        await wait_for(listening)
        await enqueue_first_free(pool, JobName.PROCESS_WEBHOOK, (2,), ["wake-test:webhook"])
        await request_send(pool, 1)
        await wait_for(sent)
        assert await pool.zscore(queue_name, "wake-test:webhook") is not None
        assert not await pool.exists(in_progress_key_prefix + "wake-test:webhook")
    finally:
        main.cancel()
        await worker.close()
        await pool.delete(queue_name, "arq:job:wake-test:webhook")
        await pool.aclose()


async def _subscribed(pool, queue_name: str) -> bool:
    from app.core.jobs import wake_channel

    counts = dict(await pool.pubsub_numsub(wake_channel(queue_name)))
    return counts.get(wake_channel(queue_name).encode(), 0) > 0
