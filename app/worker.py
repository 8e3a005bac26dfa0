"""The arq worker: every capability's jobs (its tasks.py), assembled, with the resources
they share."""

from contextlib import ExitStack
from typing import Any

import uvloop
from arq.cron import CronJob
from arq.worker import Function

from app.chat_syncs import tasks as chat_syncs_tasks
from app.connections import tasks as connections_tasks
from app.core import heap, idempotency, tracing
from app.core.db import close_driver_pool, create_driver_pool, create_engine, create_sessionmaker
from app.core.queue import arq_pool, pack_job, redis_settings, unpack_job
from app.core.settings import get_settings
from app.core.worker import ResilientWorker
from app.inbound import tasks as inbound_tasks
from app.inbound.pipeline import InboundPipeline
from app.media import download
from app.media import tasks as media_tasks
from app.media.service import Mirror
from app.media.storage import create_store
from app.messages import tasks as messages_tasks
from app.messages.sender import Sender
from app.meta.graph import GraphClient, create_session
from app.participants import tasks as participants_tasks
from app.profiles import tasks as profiles_tasks
from app.webhooks import tasks as webhooks_tasks
from app.webhooks.dispatcher import Dispatcher

FUNCTIONS: list[Function] = [
    *messages_tasks.FUNCTIONS,
    *inbound_tasks.FUNCTIONS,
    *participants_tasks.FUNCTIONS,
    *media_tasks.FUNCTIONS,
    *chat_syncs_tasks.FUNCTIONS,
    *connections_tasks.FUNCTIONS,
    *profiles_tasks.FUNCTIONS,
]
CRON_JOBS: list[CronJob] = [
    *messages_tasks.CRON_JOBS,
    *inbound_tasks.CRON_JOBS,
    *media_tasks.CRON_JOBS,
    *idempotency.CRON_JOBS,
    *webhooks_tasks.CRON_JOBS,
    *connections_tasks.CRON_JOBS,
    *chat_syncs_tasks.CRON_JOBS,
    *profiles_tasks.CRON_JOBS,
]


async def startup(ctx: dict[str, Any]) -> None:
    if "engine" in ctx:
        return  # again, after a Redis outage (see ResilientWorker)
    settings = get_settings()
    ctx["settings"] = settings
    # On only if OTel's environment variables ask for it (app/core/tracing.py).
    ctx["tracer_provider"] = tracing.start("dmrelay-worker")
    ctx["engine"] = create_engine(settings)
    ctx["http"] = create_session(settings.graph_timeout_seconds)
    sessions = create_sessionmaker(ctx["engine"])
    ctx["sessions"] = sessions
    ctx["graph"] = GraphClient(settings, ctx["http"])
    ctx["driver_pool"] = await create_driver_pool(settings)
    ctx["sender"] = Sender(ctx["driver_pool"], ctx["engine"], ctx["graph"], settings, ctx["redis"])
    ctx["inbound"] = InboundPipeline(sessions, settings, ctx["redis"])
    ctx["media_http"] = download.create_client()
    ctx["mirror"] = Mirror(
        sessions,
        ctx["media_http"],
        create_store(settings),
        settings,
        ctx["redis"],
    )
    # Customer webhooks: a long-lived sender of its own, on its own connections.
    ctx["webhooks_engine"] = create_engine(settings, pool_size=5)
    ctx["webhooks_pool"] = await create_driver_pool(settings, size=10)
    ctx["webhooks"] = Dispatcher(ctx["webhooks_engine"], ctx["webhooks_pool"], settings)
    await ctx["webhooks"].start()
    # What start-up built (modules, mappings, schemas) lives as long as the worker: kept out
    # of the collector's sight, a full collection walks only what came since. Walking it all
    # stopped the event loop for tens of milliseconds (hundreds on a busy machine), the
    # tail of sends' and customer webhooks' latency (app/core/heap.py).
    ctx["heap"] = ExitStack()
    ctx["heap"].enter_context(heap.pauses_measured())
    ctx["heap"].enter_context(heap.frozen())


async def shutdown(ctx: dict[str, Any]) -> None:
    if "engine" not in ctx:
        return  # stopped before Redis ever answered
    if "heap" in ctx:  # not if start-up failed before it
        ctx["heap"].close()
    await ctx["webhooks"].stop()
    await close_driver_pool(ctx["webhooks_pool"])
    await ctx["webhooks_engine"].dispose()
    await ctx["http"].close()
    await ctx["media_http"].aclose()
    await close_driver_pool(ctx["driver_pool"])
    await ctx["engine"].dispose()
    await tracing.stop(ctx["tracer_provider"])


class WorkerSettings:
    settings = get_settings()
    functions = FUNCTIONS
    cron_jobs = CRON_JOBS
    on_startup = startup
    on_shutdown = shutdown
    # After each poll of the queue: a backlog of chats shared with an idle worker.
    on_poll = messages_tasks.share_chats
    redis_settings = redis_settings(settings)
    # Jobs are msgpack, never pickles (see pack_job); the pool (arq_pool) enqueues with the
    # same pair.
    job_serializer = pack_job
    job_deserializer = unpack_job
    # Sends and inbound drains start when they are enqueued (app/core/jobs.py:WAKES); the
    # poll finds the rest: retries when due, background jobs, a wake missed. Each poll costs
    # CPU even when idle (every 10 ms took a tenth of a core on a slow machine).
    poll_delay = 0.1
    # Room for a full inbound batch being applied and the next one filling up (inbound/pipeline.py).
    max_jobs = 200
    # On SIGTERM, stop taking jobs and let in-flight sends finish.
    job_completion_wait = 30


def worker_options() -> dict[str, Any]:
    return {
        k: v for k, v in vars(WorkerSettings).items() if not k.startswith("_") and k != "settings"
    }


def create_worker(**overrides: Any) -> ResilientWorker:
    """The worker, on a Redis pool that connects on first use: one started while Redis is
    down waits for it."""
    settings = get_settings()
    options = {"http_port": settings.worker_http_port, **worker_options(), **overrides}
    return ResilientWorker(redis_pool=arq_pool(settings), **options)


def run() -> None:
    """The worker, until told to stop; logging configured by the caller (app/cli.py)."""
    # uvloop (which uvicorn serves the API with) turns the loop several times faster than
    # asyncio's: a worker with a hundred chats in flight spends much of its time there.
    uvloop.install()
    create_worker().run()
