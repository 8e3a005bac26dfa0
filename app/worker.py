"""The arq worker: every background job dmrelay runs."""

import asyncio
import logging
from signal import Signals
from typing import Any

import uvloop
from arq import cron, func
from arq.worker import Worker
from redis.exceptions import RedisError

from app.core import idempotency
from app.core.db import create_driver_pool, create_engine, create_sessionmaker
from app.core.queue import create_arq_pool, pack_job, redis_settings, unpack_job
from app.core.settings import get_settings
from app.inbound.pipeline import InboundPipeline
from app.media import download
from app.media.service import Mirror
from app.media.storage import create_store
from app.messages.delivery import Delivery
from app.meta.graph import GraphClient, create_session
from app.participants import service as participants

log = logging.getLogger(__name__)


async def startup(ctx: dict[str, Any]) -> None:
    settings = get_settings()
    ctx["engine"] = create_engine(settings)
    ctx["http"] = create_session(settings.graph_timeout_seconds)
    sessions = create_sessionmaker(ctx["engine"])
    ctx["sessions"] = sessions
    ctx["graph"] = GraphClient(settings, ctx["http"])
    ctx["db"] = await create_driver_pool(settings)
    ctx["delivery"] = Delivery(ctx["db"], ctx["engine"], ctx["graph"], settings, ctx["redis"])
    ctx["inbound"] = InboundPipeline(sessions, settings, ctx["redis"])
    ctx["media_http"] = download.create_client()
    ctx["mirror"] = Mirror(
        sessions,
        ctx["media_http"],
        create_store(settings),
        settings,
        ctx["redis"],
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["http"].close()
    await ctx["media_http"].aclose()
    await ctx["db"].close()
    await ctx["engine"].dispose()


async def deliver_chat(ctx: dict[str, Any], chat_id: int) -> None:
    await ctx["delivery"].deliver_chat(chat_id)


async def sweep(ctx: dict[str, Any]) -> None:
    await ctx["delivery"].sweep()


async def purge_idempotency_keys(ctx: dict[str, Any]) -> None:
    async with ctx["sessions"].begin() as session:
        await idempotency.purge_expired(session)


async def process_webhook(ctx: dict[str, Any], delivery_id: int) -> None:
    await ctx["inbound"].process_webhook_delivery(delivery_id)


async def sweep_inbound(ctx: dict[str, Any]) -> None:
    await ctx["inbound"].sweep()


async def refresh_participants(ctx: dict[str, Any], chat_ids: list[int]) -> None:
    inbound: InboundPipeline = ctx["inbound"]
    await participants.refresh(
        inbound.sessionmaker, ctx["graph"], inbound.settings, ctx["redis"], chat_ids
    )


async def mirror_attachment(ctx: dict[str, Any], message_id: int, index: int) -> None:
    await ctx["mirror"].mirror(message_id, index, ctx["job_try"])


async def check_story_mention(ctx: dict[str, Any], message_id: int, index: int, check: int) -> None:
    await ctx["mirror"].check_story_mention(message_id, index, check)


async def delete_media(ctx: dict[str, Any], keys: list[str]) -> None:
    await ctx["mirror"].delete(keys)


async def sweep_media_deletions(ctx: dict[str, Any]) -> None:
    await ctx["mirror"].sweep_deletions()


class ResilientWorker(Worker):
    """An arq worker that waits out a Redis outage instead of exiting, even one it starts
    in, does not ask Redis about the jobs it is running itself, and stops when told to."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stopping = False
        # arq stops a worker by cancelling its main task once its jobs are done. On Python
        # 3.11 that cancellation can be lost: redis-py sends each command under
        # asyncio.wait_for, which returns a send that finished at the moment it was
        # cancelled. The worker would then poll on, taking no job, and never exit.
        self.on_stop = self._stop

    def _stop(self, signum: Signals) -> None:
        self._stopping = True

    async def main(self) -> None:
        while self._pool is None:
            # dmrelay's pool rather than arq's default one (see ConcurrentConnectionPool).
            try:
                self._pool = await create_arq_pool(get_settings())
            except (RedisError, OSError) as error:
                await _wait_for_redis(error)
        await super().main()

    async def _poll_iteration(self) -> None:
        if self._stopping:
            # The cancellation arq asked for, in case it was lost (see __init__).
            raise asyncio.CancelledError
        try:
            await super()._poll_iteration()
        except (RedisError, OSError) as error:
            # Includes the WatchError redis-py raises for a connection lost mid-WATCH.
            await _wait_for_redis(error)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        # Each poll (every 10 ms while a job slot is free) reads up to max_jobs ids from the
        # queue's head, where running jobs stay until they finish, and arq checks each one in
        # Redis (three round trips) before it skips one that is running.
        job_ids = [job_id for job_id in job_ids if not self._running_here(job_id.decode())]
        try:
            await super().start_jobs(job_ids)
        except (RedisError, OSError):
            # arq had taken a job slot for the job it was starting: give it back, or each
            # Redis outage would shrink the worker for good.
            self._release_sem_dec_counter_on_complete()
            raise

    def _running_here(self, job_id: str) -> bool:
        task = self.tasks.get(job_id)
        return task is not None and not task.done()


async def _wait_for_redis(error: Exception) -> None:
    log.warning("Redis is unavailable (%s); trying again in a second", error)
    await asyncio.sleep(1.0)


def _every(seconds: int) -> set[int]:
    return set(range(0, 60, seconds))


class WorkerSettings:
    settings = get_settings()
    # keep_result=0: a finished job frees its id at once.
    functions = [
        func(deliver_chat, keep_result=0, max_tries=1),
        func(process_webhook, keep_result=0, max_tries=1),
        func(refresh_participants, keep_result=0, max_tries=1),
        func(mirror_attachment, keep_result=0, max_tries=3),
        func(check_story_mention, keep_result=0, max_tries=1),
        func(delete_media, keep_result=0, max_tries=3),
    ]
    cron_jobs = [
        cron(sweep, second=_every(settings.sweep_interval_seconds), run_at_startup=True),
        cron(sweep_inbound, second=_every(settings.sweep_interval_seconds), run_at_startup=True),
        cron(sweep_media_deletions, second=_every(settings.sweep_interval_seconds)),
        # Idempotency-Key responses are replayed for 24 h, then forgotten.
        cron(purge_idempotency_keys, minute=set(range(0, 60, 10)), second=0),
    ]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = redis_settings(settings)
    # Jobs are msgpack, never pickles (see pack_job); the pool (create_arq_pool) enqueues
    # with the same pair.
    job_serializer = pack_job
    job_deserializer = unpack_job
    # arq polls for due jobs every 0.5 s by default: too slow for a chat.
    poll_delay = 0.01
    # Room for a full inbound batch being applied and the next one filling up (inbound/pipeline.py).
    max_jobs = 200
    # On SIGTERM, stop taking jobs and let in-flight sends finish.
    job_completion_wait = 30


def worker_options() -> dict[str, Any]:
    return {
        k: v for k, v in vars(WorkerSettings).items() if not k.startswith("_") and k != "settings"
    }


def run() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # uvloop (which uvicorn serves the API with) turns the loop several times faster than
    # asyncio's: a worker with a hundred chats in flight spends much of its time there.
    uvloop.install()
    ResilientWorker(**worker_options()).run()
