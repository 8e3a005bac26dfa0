from typing import Any

import msgpack
from arq.connections import ArqRedis, RedisSettings
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import SSLConnection, parse_url

from app.core.settings import Settings


def pack_job(job: dict[str, Any]) -> bytes:
    """arq's job (and result) serializer: msgpack, plain data only. arq's default, pickle,
    would let anyone who can write to Redis run code in the worker."""
    packed: bytes = msgpack.packb(job, use_bin_type=True, default=_describe_exception)
    return packed


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

    def option(name: str, default: Any = None) -> Any:
        return options.get(name, default)

    return RedisSettings(
        host=option("host", "localhost"),
        port=option("port", 6379),
        unix_socket_path=option("path"),
        database=option("db", 0),
        username=option("username"),
        password=option("password"),
        ssl=option("connection_class") is SSLConnection,
        ssl_keyfile=option("ssl_keyfile"),
        ssl_certfile=option("ssl_certfile"),
        ssl_cert_reqs=option("ssl_cert_reqs", "required"),
        ssl_ca_certs=option("ssl_ca_certs"),
        ssl_check_hostname=option("ssl_check_hostname", False),
        conn_timeout=option("socket_connect_timeout", settings.redis_connect_timeout_seconds),
    )


MAX_CONNECTIONS = 1000


def arq_pool(settings: Settings, **kwargs: Any) -> ArqRedis:
    """The Redis client every dmrelay process uses; it connects on first use, so the API
    starts while Redis is down (GET /readyz says so). Options in REDIS_URL's query string
    (say ?socket_timeout=) win over the settings."""
    pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
        settings.redis_url,
        # redis-py's ConnectionPool checks a connection out while holding the pool's lock,
        # across an await on the socket: in a busy worker each command would queue behind
        # all the others. This pool checks outside its lock. The bound is far above what a
        # process uses (a worker runs at most 200 jobs); past it a command waits.
        max_connections=MAX_CONNECTIONS,
        timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_connect_timeout_seconds,
        socket_timeout=settings.redis_timeout_seconds,
    )
    return ArqRedis(pool, job_serializer=pack_job, job_deserializer=unpack_job, **kwargs)
