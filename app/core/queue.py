import logging
from typing import Any

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.jobs import Job

from app.core.settings import Settings

log = logging.getLogger(__name__)


def redis_settings(settings: Settings) -> RedisSettings:
    return RedisSettings.from_dsn(settings.redis_url)


async def create_arq_pool(settings: Settings) -> ArqRedis:
    return await create_pool(redis_settings(settings))


async def enqueue(pool: ArqRedis, function: str, *args: Any, **kwargs: Any) -> Job | None:
    """Enqueue a job whose rows are already committed; None if its id is taken (or Redis
    failed).

    The database row is the truth and a job only points at it, so a failed enqueue is
    logged, not raised: the caller's work is committed and a sweeper re-enqueues it.
    """
    try:
        return await pool.enqueue_job(function, *args, **kwargs)
    except Exception:
        log.exception("could not enqueue %s%r; the sweeper will pick it up", function, args)
        return None
