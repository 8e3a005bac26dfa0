"""The arq worker: every background job dmrelay runs."""

import logging
from typing import Any

import httpx
from arq import func

from app.core.db import create_engine, create_sessionmaker
from app.core.queue import redis_settings
from app.core.settings import get_settings
from app.messages.delivery import Delivery
from app.meta.graph import GraphClient

log = logging.getLogger(__name__)

# Meta answers within seconds; a send still open after this is treated as failed to reach it.
GRAPH_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


async def startup(ctx: dict[str, Any]) -> None:
    settings = get_settings()
    ctx["engine"] = create_engine(settings)
    ctx["http"] = httpx.AsyncClient(timeout=GRAPH_TIMEOUT)
    ctx["delivery"] = Delivery(
        sessionmaker=create_sessionmaker(ctx["engine"]),
        graph=GraphClient(settings, ctx["http"]),
        settings=settings,
    )


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["http"].aclose()
    await ctx["engine"].dispose()


async def deliver_message(ctx: dict[str, Any], message_id: int) -> None:
    await ctx["delivery"].deliver(message_id)


class WorkerSettings:
    # keep_result=0: a finished job frees its id, so the message can be queued again.
    functions = [func(deliver_message, keep_result=0)]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = redis_settings(get_settings())
    # arq polls for due jobs every 0.5 s by default: too slow for a chat.
    poll_delay = 0.01
    max_jobs = 50
