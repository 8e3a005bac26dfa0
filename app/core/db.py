import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NotRequired, TypedDict, cast

import asyncpg
from arq.connections import ArqRedis
from asyncpg.pool import PoolAcquireContext
from sqlalchemy import MetaData, event, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Session, SessionTransaction

from app.core.settings import Settings

# Stable constraint names, so migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# The driver's own deadline for a statement comes this long after the server's
# statement_timeout: it only fires when the server is not answering at all.
_DRIVER_GRACE_SECONDS = 2.0


class ConnectOptions(TypedDict):
    timeout: float
    command_timeout: NotRequired[float]
    server_settings: NotRequired[dict[str, str]]


def connect_options(settings: Settings) -> ConnectOptions:
    """The timeouts every PostgreSQL connection gets (asyncpg.connect's keyword arguments)."""
    statement_timeout = settings.database_statement_timeout_seconds
    options: ConnectOptions = {"timeout": settings.database_connect_timeout_seconds}
    if statement_timeout > 0:
        options["command_timeout"] = statement_timeout + _DRIVER_GRACE_SECONDS
        # Counts the time spent waiting for locks too.
        options["server_settings"] = {"statement_timeout": str(int(statement_timeout * 1000))}
    return options


def create_engine(settings: Settings, **kwargs: Any) -> AsyncEngine:
    kwargs.setdefault("pool_size", 20)
    kwargs.setdefault("pool_timeout", settings.database_pool_timeout_seconds)
    kwargs.setdefault("connect_args", connect_options(settings))
    # No overflow: under load, overflow connections are opened and closed over and over
    # (a TLS probe and a backend start each), which costs far more than waiting for one.
    kwargs.setdefault("max_overflow", 0)
    # No pre-ping (a round trip per checkout): after a PostgreSQL restart, the first use of
    # a dead connection fails and SQLAlchemy then replaces the whole pool.
    # Statement parameters stay out of error messages (and so out of logs): they include
    # encrypted access tokens and customers' messages.
    return create_async_engine(settings.database_url, hide_parameters=True, **kwargs)


async def create_driver_pool(settings: Settings, size: int = 20) -> asyncpg.Pool:
    """A bare asyncpg pool, for the few hot paths that skip SQLAlchemy altogether.

    It connects on first use and grows to `size` connections only under load, as
    SQLAlchemy's pool does: a process started while PostgreSQL is down starts all the same,
    and connects once it is back. Only single autocommit statements run on it, which leave
    no session state behind, so a connection goes back without asyncpg's reset (a round
    trip per use). asyncpg has no pool-wide acquire timeout: the API acquires through
    `acquire`, which bounds the wait by DATABASE_POOL_TIMEOUT_SECONDS."""
    url = make_url(settings.database_url).set(drivername="postgresql")
    return await asyncpg.create_pool(
        url.render_as_string(hide_password=False),
        min_size=0,
        max_size=size,
        reset=_keep_as_is,
        **connect_options(settings),
    )


async def _keep_as_is(connection: asyncpg.Connection) -> None:
    pass


# How long closing a driver pool waits for its connections in use to come back.
POOL_CLOSE_SECONDS = 10.0


async def close_driver_pool(pool: asyncpg.Pool) -> None:
    """Close a driver pool. asyncpg's `close` waits for every connection in use to come back,
    for ever: a connection a cancelled task never gave back would keep the process from
    stopping. Past POOL_CLOSE_SECONDS, the connections are terminated instead."""
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_SECONDS)
    except TimeoutError:
        logging.getLogger(__name__).warning(
            "a database connection was still in use after %.0f s: closed without waiting",
            POOL_CLOSE_SECONDS,
        )
        pool.terminate()


def acquire(pool: asyncpg.Pool, timeout: float) -> PoolAcquireContext:
    """`pool.acquire()`, its wait bounded by `timeout` when there can be one: only when
    every connection the pool may open is in use. asyncpg applies a timeout by running the
    acquire as a task of its own, a cost on every hot request; a free or not yet opened
    connection is had without waiting for another request (opening one is bounded by the
    connect timeout)."""
    if pool.get_idle_size() or pool.get_size() < pool.get_max_size():
        return pool.acquire()
    return pool.acquire(timeout=timeout)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The session's own asyncpg connection, for hot paths that skip SQLAlchemy's per-statement
    work. A statement run on it is part of the session's transaction once the session has
    run a statement of its own (SQLAlchemy begins lazily); before that, it commits alone."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    # SQLAlchemy types it Any | None (None once closed); with asyncpg, asyncpg's connection.
    return cast(asyncpg.Connection, raw.driver_connection)


BEFORE_COMMIT = "before_commit"
AFTER_COMMIT = "after_commit"


def before_commit(
    session: AsyncSession, action: Callable[[AsyncSession], Awaitable[object]]
) -> None:
    """Run `action` (given the session) just before the session's transaction commits: once,
    however often it is asked for."""
    actions = session.info.setdefault(BEFORE_COMMIT, [])
    if action not in actions:
        actions.append(action)


AfterCommit = Callable[[ArqRedis], Awaitable[object]]


def after_commit(session: AsyncSession, action: AfterCommit) -> None:
    """Run `action` (given the arq pool) once the session's transaction has committed.

    A job enqueued before commit could run before its rows are visible to the worker. One
    asked for inside a savepoint (`begin_nested`) is dropped if the savepoint rolls back:
    the rows it is about were never written.
    """
    savepoint = session.sync_session.get_nested_transaction()
    session.info.setdefault(AFTER_COMMIT, []).append((savepoint, action))


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back_actions(session: Session, rolled_back: SessionTransaction) -> None:
    """Drop the after-commit actions asked for inside a transaction or savepoint that rolled
    back, or inside a savepoint within it (released or not)."""
    actions = session.info.get(AFTER_COMMIT)
    if actions:
        session.info[AFTER_COMMIT] = [
            (savepoint, action)
            for savepoint, action in actions
            if rolled_back.nested and not _within(savepoint, rolled_back)
        ]


def _within(savepoint: SessionTransaction | None, transaction: SessionTransaction) -> bool:
    while savepoint is not None:
        if savepoint is transaction:
            return True
        savepoint = savepoint.parent
    return False


async def session_scope(
    sessionmaker: async_sessionmaker[AsyncSession], arq_pool: ArqRedis
) -> AsyncIterator[AsyncSession]:
    """The one place a unit of work is committed, then its jobs enqueued."""
    async with sessionmaker() as session:
        try:
            yield session
            for action in session.info.pop(BEFORE_COMMIT, []):
                await action(session)
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        actions = session.info.pop(AFTER_COMMIT, [])
    for _, action in actions:
        await action(arq_pool)
