from typing import Any

import msgpack
from arq.connections import ArqRedis, RedisSettings
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import SSLConnection, parse_url

from app.core.settings import Settings


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
