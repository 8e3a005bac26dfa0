"""A stalled or unreachable PostgreSQL or Redis: each call times out, the API answers a quick
503 with a sentence and Retry-After (FastAPI's routes and the express lane alike), starts
while Redis is down and says so on GET /readyz, and the worker's job fails and is swept,
losing nothing.

Each API here is an instance of its own (on a free local port) with short timeouts and, where
needed, a dependency URL pointing at a local server that accepts connections and never
answers. The client's own timeout only keeps a hung request from hanging the test."""

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest
import sqlalchemy.exc
import uvicorn
from sqlalchemy import make_url, select

from app.core.availability import Dependency, unavailable
from app.core.db import acquire, create_driver_pool, create_engine
from app.core.settings import Settings
from app.inbound.signature import signature_of
from app.messages.models import Message
from tests.conftest import _free_port, wait_for

CUSTOMER = "1602510301006188"
# Only guards against a request that never ends (the failure these tests look for).
HUNG = 30.0
DATABASE_DOWN = "The database is not answering; try again shortly."
REDIS_DOWN = "The job queue (Redis) is not answering; try again shortly."
WEBHOOK = json.dumps({"object": "instagram", "entry": []}).encode()


def _settings(base: Settings, **overrides) -> Settings:
    return base.model_copy(update=overrides)


@asynccontextmanager
async def _api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An API instance of its own, and a client for it."""
    from app.main import create_app

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            # A request still hanging at the end (the failure looked for) is cut off.
            timeout_graceful_shutdown=1,
        )
    )
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()
            raise AssertionError("the API did not start")
        return server.started

    try:
        await wait_for(started, timeout=HUNG)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=HUNG) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def _silent_server() -> AsyncIterator[int]:
    """A TCP server on loopback that accepts connections and never answers (a stalled
    PostgreSQL or Redis); its port."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()  # until the client hangs up

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()


@asynccontextmanager
async def _locked(
    settings: Settings, table: str, mode: str = "ACCESS EXCLUSIVE"
) -> AsyncIterator[None]:
    """`table` locked against everyone else (`mode` EXCLUSIVE still lets them read it),
    until the block ends."""
    url = make_url(settings.database_url).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        async with connection.transaction():
            await connection.execute(f"LOCK TABLE {table} IN {mode} MODE")
            yield
    finally:
        await connection.close()


def _signed(settings: Settings) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": signature_of(settings.meta_app_secret, WEBHOOK),
    }


def _assert_unavailable(response: httpx.Response, message: str) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {"error": message, "errors": []}
    assert int(response.headers["Retry-After"]) > 0


async def _stored(clean, message_id: str) -> Message | None:
    from app.core import ids

    async with clean.sessionmaker() as session:
        return await session.scalar(
            select(Message).where(Message.id == ids.decode(ids.Kind.MESSAGE, message_id))
        )


async def test_a_table_locked_too_long_answers_503_on_routes_and_the_express_lane(account, clean):
    settings = _settings(clean.settings, database_statement_timeout_seconds=0.5)
    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    auth = {"Authorization": f"Bearer {account.token}"}
    async with _api(settings) as api:
        # Verifies the key, so the next send takes the express lane.
        first = await api.post(f"/api/chats/{chat.id}/messages", json={"body": "a"}, headers=auth)
        assert first.status_code == 202, first.text

        async with _locked(settings, "messages"):
            send = await api.post(
                f"/api/chats/{chat.id}/messages", json={"body": "b"}, headers=auth
            )
            _assert_unavailable(send, DATABASE_DOWN)
            listing = await api.get(f"/api/chats/{chat.id}/messages", headers=auth)
            _assert_unavailable(listing, DATABASE_DOWN)
        async with _locked(settings, "webhook_deliveries"):
            webhook = await api.post(
                "/webhooks/instagram", content=WEBHOOK, headers=_signed(settings)
            )
            _assert_unavailable(webhook, DATABASE_DOWN)

        # And it serves again once the lock is gone.
        again = await api.post(f"/api/chats/{chat.id}/messages", json={"body": "c"}, headers=auth)
        assert again.status_code == 202, again.text


async def test_a_database_that_does_not_answer_gives_503_and_readyz_says_so(account, clean):
    async with _silent_server() as port:
        url = make_url(clean.settings.database_url).set(host="127.0.0.1", port=port)
        settings = _settings(
            clean.settings,
            database_url=url.render_as_string(hide_password=False),
            database_connect_timeout_seconds=0.5,
            database_pool_timeout_seconds=0.5,
            readiness_timeout_seconds=0.5,
        )
        async with _api(settings) as api:
            assert (await api.get("/healthz")).status_code == 200
            ready = await api.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"] == {
                "postgresql": "unavailable",
                "redis": "ok",
                "migrations": "unknown",
            }
            assert DATABASE_DOWN in ready.json()["error"]
            # The express lane (signed webhooks always take it) and a FastAPI route.
            webhook = await api.post(
                "/webhooks/instagram", content=WEBHOOK, headers=_signed(settings)
            )
            _assert_unavailable(webhook, DATABASE_DOWN)
            profiles = await api.get(
                "/api/profiles", headers={"Authorization": f"Bearer {account.token}"}
            )
            _assert_unavailable(profiles, DATABASE_DOWN)


async def test_the_api_starts_while_redis_is_down_and_a_send_is_kept(account, clean):
    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    nothing_there = f"redis://127.0.0.1:{_free_port()}/0"
    settings = _settings(clean.settings, redis_url=nothing_there)
    async with _api(settings) as api:
        assert (await api.get("/healthz")).json() == {"status": "ok"}
        ready = await api.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {
            "postgresql": "ok",
            "redis": "unavailable",
            "migrations": "ok",
        }
        assert REDIS_DOWN in ready.json()["error"]
        send = await api.post(
            f"/api/chats/{chat.id}/messages",
            json={"body": "kept while Redis is down"},
            headers={"Authorization": f"Bearer {account.token}"},
        )
        assert send.status_code == 202, send.text
    # Its job never reached Redis; the sweeper (of the worker on the working Redis) sends it.
    message_id = send.json()["id"]

    async def published():
        return (await account.client.messages.get(message_id)).status == "published"

    await wait_for(published, timeout=30)


async def test_a_stalled_redis_answers_503_where_it_is_needed_and_sends_are_kept(account, clean):
    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    auth = {"Authorization": f"Bearer {account.token}"}
    async with _silent_server() as port:
        settings = _settings(
            clean.settings,
            redis_url=f"redis://127.0.0.1:{port}/0",
            redis_timeout_seconds=0.5,
            readiness_timeout_seconds=0.5,
        )
        async with _api(settings) as api:
            ready = await api.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"] == {
                "postgresql": "ok",
                "redis": "unavailable",
                "migrations": "ok",
            }
            # An Idempotency-Key needs Redis's lock: refused, as nothing was done.
            keyed = await api.post(
                f"/api/chats/{chat.id}/messages",
                json={"body": "keyed"},
                headers={**auth, "Idempotency-Key": "k1"},
            )
            _assert_unavailable(keyed, REDIS_DOWN)
            # A plain send and a webhook are stored; their jobs wait for the sweepers.
            send = await api.post(
                f"/api/chats/{chat.id}/messages", json={"body": "kept"}, headers=auth
            )
            assert send.status_code == 202, send.text
            webhook = await api.post(
                "/webhooks/instagram", content=WEBHOOK, headers=_signed(settings)
            )
            assert webhook.status_code == 200, webhook.text
    assert await _stored(clean, send.json()["id"]) is not None


async def test_the_worker_survives_a_table_locked_too_long(account, clean):
    """A delivery job blocked on a lock times out and fails; the sweeper sends the message
    once the lock is gone."""
    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    worker = clean.worker
    worker.allow_pick_jobs = False
    try:
        message = await account.client.messages.send(chat.id, body="through a lock")
        failed_before = worker.jobs_failed
        async with _locked(clean.settings, "chats", "EXCLUSIVE"):
            worker.allow_pick_jobs = True

            async def a_job_timed_out() -> bool:
                return worker.jobs_failed > failed_before

            await wait_for(a_job_timed_out, timeout=HUNG)
            assert (await account.client.messages.get(message.id)).status == "pending"
    finally:
        worker.allow_pick_jobs = True

    async def published():
        return (await account.client.messages.get(message.id)).status == "published"

    await wait_for(published, timeout=HUNG)


async def test_waiting_for_a_pooled_connection_is_bounded(clean):
    settings = _settings(clean.settings, database_pool_timeout_seconds=0.2)
    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.connect():
            with pytest.raises(sqlalchemy.exc.TimeoutError) as waited:
                async with asyncio.timeout(10), engine.connect():
                    pass
        assert unavailable(waited.value) is Dependency.POSTGRESQL
    finally:
        await engine.dispose()


async def test_waiting_for_a_driver_connection_is_bounded_only_when_all_are_taken(clean):
    """The express lane's pool: a free connection, or one not opened yet, is had at once;
    with every connection taken, the wait ends after the pool timeout."""
    pool = await create_driver_pool(clean.settings, size=1)
    try:
        async with acquire(pool, 0.2) as connection:  # opened on demand, no timeout needed
            assert await connection.fetchval("SELECT 1") == 1
            guard = asyncio.timeout(10)  # only a hang reaches it
            with pytest.raises(TimeoutError) as waited:
                async with guard, acquire(pool, 0.2):
                    pass
            assert not guard.expired(), "the wait was not bounded by the pool timeout"
        assert unavailable(waited.value) is Dependency.POSTGRESQL
        async with acquire(pool, 0.2) as connection:  # idle again: had at once
            assert await connection.fetchval("SELECT 2") == 2
    finally:
        await pool.close()


@pytest.mark.parametrize(
    ("version", "ready", "migrations"),
    [(None, False, "behind"), ("0001", False, "behind"), ("9999", True, "ahead")],
)
async def test_readyz_says_when_the_database_is_not_migrated_for_this_version(
    clean, version, ready, migrations
):
    """A database short of this version's migrations is not ready (a newer version's is, so a
    rolling upgrade keeps serving); the sentence says what to run. Asked of
    availability.readiness, which GET /readyz answers with, on a database of its own."""
    from starlette.datastructures import State

    from app.core.availability import readiness
    from app.core.migrate import create_database_if_missing, revisions

    url = make_url(clean.settings.database_url)
    other = url.set(database=f"{url.database}_schema")
    await create_database_if_missing(other.render_as_string(hide_password=False))
    plain = other.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(plain)
    try:
        await connection.execute("DROP TABLE IF EXISTS alembic_version")
        if version is not None:
            await connection.execute("CREATE TABLE alembic_version (version_num text)")
            await connection.execute("INSERT INTO alembic_version VALUES ($1)", version)
    finally:
        await connection.close()
    settings = _settings(clean.settings, database_url=other.render_as_string(hide_password=False))
    pool = await create_driver_pool(settings)
    try:
        state = State({"driver_pool": pool, "arq_pool": clean.worker.pool})
        is_ready, body = await readiness(state, 5.0)
    finally:
        await pool.close()
    assert is_ready is ready, body
    assert body["checks"] == {"postgresql": "ok", "redis": "ok", "migrations": migrations}
    if not ready:
        found = f"at migration {version}" if version else "not migrated"
        assert body["error"] == (
            f"Not ready. The database is {found}; this version needs {revisions().head}: "
            "run `dmrelay migrate`."
        )


async def test_readyz_is_ready_on_the_migrated_database(clean):
    async with httpx.AsyncClient(base_url=clean.api_url) as client:
        answer = await client.get("/readyz")
    assert answer.status_code == 200
    assert answer.json() == {
        "status": "ready",
        "checks": {"postgresql": "ok", "redis": "ok", "migrations": "ok"},
    }
