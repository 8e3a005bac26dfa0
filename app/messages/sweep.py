"""The sweep (cron `sweep`): a chat whose due messages no job or worker has gets a job again.

A job is lost when Redis is flushed or restarted, or its worker dies mid-job; the messages
are in PostgreSQL, so nothing else is.
"""

import logging
import time
from datetime import timedelta

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.jobs import enqueue
from app.core.settings import Settings
from app.messages import repository
from app.messages.sender import send_job

log = logging.getLogger(__name__)

# A message younger than this still has the job its acceptance enqueued.
SWEEP_GRACE = timedelta(seconds=5)
SWEEP_BATCH = 500


async def requeue_stranded_chats(engine: AsyncEngine, redis: ArqRedis, settings: Settings) -> int:
    """Re-enqueue chats whose due messages have no live job and no worker. Returns how many."""
    chat_ids = await repository.stranded_chats(engine, SWEEP_GRACE, SWEEP_BATCH)
    bucket = int(time.time() // settings.sweep_interval_seconds)
    for chat_id in chat_ids:
        await enqueue(redis, send_job(chat_id, f"sweep:{chat_id}:{bucket}"))
    if chat_ids:
        log.warning("sweeper re-enqueued %d chats with undelivered messages", len(chat_ids))
    return len(chat_ids)
