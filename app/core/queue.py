import logging
from typing import Any

import msgpack
from arq.connections import ArqRedis, RedisSettings
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import Job, serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import SSLConnection, parse_url

from app.core.settings import Settings

log = logging.getLogger(__name__)


def pack_job(job: dict[str, Any]) -> bytes:
    """arq's job (and result) serializer: msgpack, plain data only. arq's default, pickle,
    would let anyone who can write to Redis run code in the worker."""
    return msgpack.packb(job, use_bin_type=True, default=_describe_exception)


def _describe_exception(value: Any) -> str:
    # arq records a failed job's exception as its result (which dmrelay never reads): kept
    # as a sentence. Anything else that is not plain data is refused, as a job argument.
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    raise TypeError(f"a job holds plain data only, not {type(value).__name__}")


def unpack_job(data: bytes) -> Any:
    """The deserializer matching `pack_job`: whatever is not msgpack (say, a pickle) fails,
    and arq logs the job and drops it without running anything."""
    return msgpack.unpackb(data, raw=False)


def redis_settings(settings: Settings) -> RedisSettings:
    """arq's RedisSettings for REDIS_URL, read as redis-py reads it for every other
    connection (arq's own `from_dsn` neither decodes a percent-encoded password nor reads
    the ssl_* options of a rediss:// URL)."""
    options = parse_url(settings.redis_url)
    return RedisSettings(
        host=options.get("host", "localhost"),
        port=options.get("port", 6379),
        unix_socket_path=options.get("path"),
        database=options.get("db", 0),
        username=options.get("username"),
        password=options.get("password"),
        ssl=options.get("connection_class") is SSLConnection,
        ssl_keyfile=options.get("ssl_keyfile"),
        ssl_certfile=options.get("ssl_certfile"),
        ssl_cert_reqs=options.get("ssl_cert_reqs", "required"),
        ssl_ca_certs=options.get("ssl_ca_certs"),
        ssl_check_hostname=options.get("ssl_check_hostname", False),
        conn_timeout=options.get("socket_connect_timeout", settings.redis_connect_timeout_seconds),
    )


class ConcurrentConnectionPool(ConnectionPool):
    """A connection pool that lets concurrent commands go out concurrently.

    redis-py 5 (arq pins redis < 6) checks a connection out while holding the pool's lock,
    across an await on the socket: commands then leave one per event-loop turn, and in a
    busy worker each Redis call queues behind all the others. The lock need only guard the pool's
    bookkeeping; the check runs on a connection this caller alone now holds.
    """

    async def get_connection(self, command_name=None, *keys, **options):  # noqa: ANN001, ANN201
        async with self._lock:
            connection = self.get_available_connection()
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection


def arq_pool(settings: Settings, **kwargs: Any) -> ArqRedis:
    """The Redis client every dmrelay process uses; it connects on first use, so the API
    starts while Redis is down (GET /readyz says so). Options in REDIS_URL's query string
    (say ?socket_timeout=) win over the settings."""
    pool = ConcurrentConnectionPool.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_connect_timeout_seconds,
        socket_timeout=settings.redis_timeout_seconds,
    )
    return ArqRedis(pool, job_serializer=pack_job, job_deserializer=unpack_job, **kwargs)


async def create_arq_pool(settings: Settings) -> ArqRedis:
    """`arq_pool`, once Redis has answered."""
    pool = arq_pool(settings)
    try:
        await pool.ping()
    except BaseException:
        await pool.aclose()
        raise
    return pool


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


# arq's enqueue_job for several candidate ids in one round trip (arq itself takes three per
# id: WATCH, EXISTS, MULTI/EXEC): the job goes under the first id with no job or result.
# KEYS: the queue, then each id's job key and result key. ARGV: the serialised job, its
# score, its expiry (ms), then the ids.
_ENQUEUE_FIRST_FREE = """
for j = 1, #ARGV - 3 do
    if redis.call('EXISTS', KEYS[2 * j], KEYS[2 * j + 1]) == 0 then
        redis.call('PSETEX', KEYS[2 * j], ARGV[3], ARGV[1])
        redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3 + j])
        return j
    end
end
return 0
"""


async def enqueue_first_free(
    pool: ArqRedis, function: str, args: tuple[Any, ...], job_ids: list[str]
) -> str | None:
    """Enqueue a job under the first of `job_ids` that is free, as arq would; the id used,
    or None if all are taken (or Redis failed: logged, as in `enqueue`)."""
    keys, argv = _first_free(pool, function, args, job_ids)
    try:
        taken = await pool.register_script(_ENQUEUE_FIRST_FREE)(keys, argv)
    except Exception:
        log.exception("could not enqueue %s%r; the sweeper will pick it up", function, args)
        return None
    return job_ids[taken - 1] if taken else None


async def enqueue_each_first_free(
    pool: ArqRedis, function: str, jobs: list[tuple[tuple[Any, ...], list[str]]]
) -> None:
    """Several jobs (args, candidate ids), each as `enqueue_first_free` would, in one round
    trip."""
    script = pool.register_script(_ENQUEUE_FIRST_FREE)
    try:
        async with pool.pipeline(transaction=False) as pipe:
            for args, job_ids in jobs:
                keys, argv = _first_free(pool, function, args, job_ids)
                await script(keys, argv, client=pipe)
            await pipe.execute()
    except Exception:
        log.exception(
            "could not enqueue %d %s jobs; the sweeper will pick them up", len(jobs), function
        )


def _first_free(
    pool: ArqRedis, function: str, args: tuple[Any, ...], job_ids: list[str]
) -> tuple[list[str], list[Any]]:
    """The KEYS and ARGV of _ENQUEUE_FIRST_FREE for one job."""
    enqueued_ms = timestamp_ms()
    job = serialize_job(function, args, {}, None, enqueued_ms, serializer=pool.job_serializer)
    keys = [pool.default_queue_name]
    for job_id in job_ids:
        keys += [job_key_prefix + job_id, result_key_prefix + job_id]
    return keys, [job, enqueued_ms, pool.expires_extra_ms, *job_ids]
