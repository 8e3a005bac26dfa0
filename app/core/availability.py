"""PostgreSQL and Redis being down or stalled, as a client and an operator see it.

Every call to either has a timeout (DATABASE_*_TIMEOUT_SECONDS, REDIS_*_TIMEOUT_SECONDS),
and the error that timeout or a refused connection raises is turned into a 503 with a
sentence and Retry-After (by app/core/request_id.py, around FastAPI and the express lane
alike), not a 500 or a request left hanging. GET /readyz asks both directly.
"""

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Literal, NotRequired, TypedDict, TypeVar

import asyncpg
import sqlalchemy.exc
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.datastructures import State

from app.core.migrate import revisions

log = logging.getLogger(__name__)

T = TypeVar("T")

# How soon a client may try again: long enough for a restart or a lock to clear.
RETRY_AFTER_SECONDS = 5


class Dependency(StrEnum):
    POSTGRESQL = "postgresql"
    REDIS = "redis"


MESSAGES = {
    Dependency.POSTGRESQL: "The database is not answering; try again shortly.",
    Dependency.REDIS: "The job queue (Redis) is not answering; try again shortly.",
}

# SQLSTATE classes and codes that say the server cannot serve now, not that the request is
# wrong: connection exception (08), insufficient resources (53, e.g. too many connections),
# operator intervention (57: statement_timeout, shutdown, starting up), lock_timeout (55P03).
_UNAVAILABLE_CLASSES = ("08", "53", "57")
_LOCK_NOT_AVAILABLE = "55P03"
_NETWORK_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ETIMEDOUT,
}


def unavailable(error: BaseException) -> Dependency | None:
    """Which dependency `error` (or an error it was raised from) says is down or stalled;
    None for any other error.

    redis-py wraps its socket errors in its own, and the Graph and media clients wrap
    theirs, so a bare timeout or connection error in the API comes from the PostgreSQL
    driver (connecting, acquiring from its pool, or its own statement deadline)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, RedisConnectionError | RedisTimeoutError):
            return Dependency.REDIS
        if _is_postgresql_outage(current):
            return Dependency.POSTGRESQL
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return None


def _is_postgresql_outage(error: BaseException) -> bool:
    if isinstance(error, asyncpg.PostgresError):
        sqlstate = error.sqlstate or ""
        return sqlstate[:2] in _UNAVAILABLE_CLASSES or sqlstate == _LOCK_NOT_AVAILABLE
    return isinstance(
        error,
        sqlalchemy.exc.TimeoutError  # waiting for a pooled connection
        | asyncpg.exceptions.ConnectionDoesNotExistError
        | TimeoutError
        | ConnectionError
        | socket.gaierror,
    ) or (isinstance(error, OSError) and error.errno in _NETWORK_ERRNOS)


class Schema(StrEnum):
    """Where the database's schema stands against this version's migrations."""

    AT_HEAD = "ok"
    BEHIND = "behind"  # `dmrelay migrate` has not been run for this version
    AHEAD = "ahead"  # a newer version migrated it: this one may still serve (a rolling upgrade)
    UNKNOWN = "unknown"  # PostgreSQL did not answer


async def _ping_postgresql(state: State) -> str | None:
    """PostgreSQL answers; with its schema's migration (None: not migrated), in the same
    round trip."""
    async with state.driver_pool.acquire() as connection:
        try:
            version: str | None = await connection.fetchval(
                "SELECT max(version_num) FROM alembic_version"
            )
        except asyncpg.UndefinedTableError:
            return None
    return version


def schema_of(version: str | None) -> Schema:
    expected = revisions()
    if version == expected.head:
        return Schema.AT_HEAD
    if version is not None and version not in expected.known:
        return Schema.AHEAD
    return Schema.BEHIND


def behind_sentence(version: str | None) -> str:
    found = f"at migration {version}" if version else "not migrated"
    return f"The database is {found}; this version needs {revisions().head}: run `dmrelay migrate`."


async def _ping_redis(state: State) -> None:
    await state.arq_pool.ping()


class Readiness(TypedDict):
    """GET /readyz's body."""

    error: NotRequired[str]
    status: Literal["ready", "unavailable"]
    # Per Dependency ("ok", "unavailable"), and "migrations": a Schema's value.
    checks: dict[str, str]


async def readiness(state: State, timeout: float) -> tuple[bool, Readiness]:
    """Whether the API can serve, and GET /readyz's body: each dependency asked at once,
    each given `timeout` seconds, and the database's schema at the head this version needs
    (one a newer version migrated still serves, as during a rolling upgrade)."""

    async def check(
        probe: Callable[[State], Awaitable[T]], dependency: Dependency
    ) -> tuple[bool, T | None]:
        try:
            async with asyncio.timeout(timeout):
                return True, await probe(state)
        except Exception as error:
            log.warning("readiness: %s is unavailable (%r)", dependency, error)
            return False, None

    (postgresql_up, version), (redis_up, _) = await asyncio.gather(
        check(_ping_postgresql, Dependency.POSTGRESQL), check(_ping_redis, Dependency.REDIS)
    )
    schema = schema_of(version) if postgresql_up else Schema.UNKNOWN
    checks = {
        Dependency.POSTGRESQL: "ok" if postgresql_up else "unavailable",
        Dependency.REDIS: "ok" if redis_up else "unavailable",
        "migrations": schema.value,
    }
    problems = [
        MESSAGES[dependency]
        for dependency, up in ((Dependency.POSTGRESQL, postgresql_up), (Dependency.REDIS, redis_up))
        if not up
    ]
    if schema == Schema.BEHIND:
        problems.append(behind_sentence(version))
    if not problems:
        return True, {"status": "ready", "checks": checks}
    sentence = " ".join(problems)
    return False, {"error": f"Not ready. {sentence}", "status": "unavailable", "checks": checks}
