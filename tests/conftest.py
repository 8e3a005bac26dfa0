"""The test harness: real PostgreSQL and Redis, the API, a worker and the sandbox Graph
API, all served on free local ports in the test session's event loop."""

import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from postproxy import PostProxy
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app import embedded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


API_PORT, PLAIN_API_PORT, SANDBOX_PORT = _free_port(), _free_port(), _free_port()
API_URL = f"http://127.0.0.1:{API_PORT}"
SANDBOX_URL = f"http://127.0.0.1:{SANDBOX_PORT}"
# How long a test waits for something by default: a bound that only a hang reaches, not a
# measure of speed (the suite may share a slow machine).
WAIT_SECONDS = 60.0
# How long the stack's teardown waits for the worker and each server to stop.
STOP_SECONDS = 60.0


def _servers() -> tuple[str, str]:
    """PostgreSQL's and Redis's URLs: TEST_DATABASE_URL and TEST_REDIS_URL when given, else
    the default local ports when something answers there, else embedded servers of the
    session's own (on free loopback ports, for the tests that change a URL's port), stopped
    when it ends."""
    database = os.environ.get("TEST_DATABASE_URL")
    if database is None and embedded.answers("127.0.0.1", 5432):
        database = "postgresql://postgres@127.0.0.1:5432/dmrelay_test"
    redis = os.environ.get("TEST_REDIS_URL")
    if redis is None and embedded.answers("127.0.0.1", 6379):
        redis = "redis://127.0.0.1:6379/15"
    root = Path(tempfile.mkdtemp(prefix="dmrelay-test-servers-"))
    root.chmod(0o711)  # PostgreSQL may run as another user (when we are root)
    atexit.register(shutil.rmtree, root, ignore_errors=True)  # runs last
    if database is None:
        postgres = embedded.Postgres(root / "postgres", port=_free_port(), durable=False)
        postgres.init()
        postgres.start()
        atexit.register(postgres.stop, "immediate")
        database = postgres.database_url("dmrelay_test")
    if redis is None:
        server = embedded.Redis(root / "redis", port=_free_port(), persistent=False)
        server.start()
        atexit.register(server.kill)
        redis = server.url
    return database, redis


DATABASE_URL, REDIS_URL = _servers()

os.environ.update(
    DATABASE_URL=DATABASE_URL,
    REDIS_URL=REDIS_URL,
    SECRET_KEY="test-secret-key",
    META_APP_SECRET="test-app-secret",
    INSTAGRAM_APP_SECRET="test-instagram-app-secret",
    INSTAGRAM_APP_ID="test-instagram-app-id",
    INSTAGRAM_REDIRECT_URI=f"{API_URL}/connect/instagram/callback",
    META_VERIFY_TOKEN="test-verify-token",
    META_GRAPH_URL=SANDBOX_URL,
    SANDBOX_WEBHOOK_URL=f"{API_URL}/webhooks/instagram",
    # Inbound media: a private directory, and the sandbox's CDN on 127.0.0.1 reachable.
    MEDIA_DIR=tempfile.mkdtemp(prefix="dmrelay-test-media-"),
    MEDIA_BASE_URL=f"{API_URL}/media",
    MEDIA_ALLOW_PRIVATE_HOSTS="true",
    MEDIA_ALLOWED_PORTS=f"80,443,{SANDBOX_PORT}",
    # Short delays, so retries and sweeps happen within a test. The Graph timeout and the
    # echo wait are not short: on a busy machine a normal send can take over a second to be
    # answered, and its echo as long to be applied, which would turn it into an unknown
    # outcome and a second send. Only a send the sandbox never answers waits them out.
    GRAPH_TIMEOUT_SECONDS="5",
    ECHO_WAIT_SECONDS="5",
    RETRY_BASE_SECONDS="0.05",
    RETRY_MAX_SECONDS="0.2",
    THROTTLE_PAUSE_SECONDS="0.5",
    SWEEP_INTERVAL_SECONDS="1",
    MAX_ATTEMPTS="8",
    # Customer webhooks: receivers on loopback over http, retries and polls within a test.
    WEBHOOK_ALLOW_HTTP="true",
    WEBHOOK_ALLOW_PRIVATE_HOSTS="true",
    WEBHOOK_RETRY_SCHEDULE_SECONDS="0,0.2,0.4,0.6,0.8",
    WEBHOOK_POLL_SECONDS="0.2",
)

# The whole run's logs, written as a dmrelay process writes them (app/core/logs.py), and the
# secrets and message texts the run used: the last test greps the one for the other
# (tests/test_secrets_in_logs.py).
RUN_LOG = Path(tempfile.mkdtemp(prefix="dmrelay-test-logs-")) / "run.log"
SECRETS_USED: set[str] = {
    os.environ[name]
    for name in ("SECRET_KEY", "META_APP_SECRET", "INSTAGRAM_APP_SECRET", "META_VERIFY_TOKEN")
}
# Texts shorter than this are too common ("hi", "hello") to mean a leak when found.
MEMORABLE_TEXT = 12
LAST_TEST = "test_no_secret_or_message_text_in_the_whole_runs_logs"


@pytest.fixture(scope="session", autouse=True)
def run_log():
    from app.core.logs import QUIET, JsonFormatter

    handler = logging.FileHandler(RUN_LOG, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ["", *QUIET]}
    root.addHandler(handler)
    # As a dmrelay process logs (app/core/logs.py:dict_config), with LOG_LEVEL's default.
    root.setLevel(logging.INFO)
    for name, level in QUIET.items():
        logging.getLogger(name).setLevel(level)
    yield RUN_LOG
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    root.removeHandler(handler)
    handler.close()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The grep of the run's logs runs last, after any reordering, to see all of them."""
    last = [item for item in items if item.name == LAST_TEST]
    items[:] = [item for item in items if item.name != LAST_TEST] + last


from app.core.db import create_engine, create_sessionmaker  # noqa: E402
from app.core.migrate import alembic_config, create_database_if_missing  # noqa: E402
from app.core.settings import Settings, get_settings  # noqa: E402

TABLES = (
    "idempotency_keys, customer_events, inbound_events, webhook_deliveries, messages, chats, "
    "profiles, api_keys, profile_groups, media_deletions, customer_webhooks, "
    "customer_webhook_dispatches, customer_webhook_attempts"
)


@pytest.fixture(scope="session")
def settings() -> Settings:
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture(scope="session")
async def database(settings: Settings) -> AsyncIterator[None]:
    """A fresh test database, migrated from scratch."""
    from alembic import command

    await create_database_if_missing(settings.database_url)
    engine = create_engine(settings, pool_size=1)
    async with engine.begin() as connection:
        await connection.execute(text("DROP SCHEMA public CASCADE"))
        await connection.execute(text("CREATE SCHEMA public"))
    await engine.dispose()
    await asyncio.to_thread(command.upgrade, alembic_config(settings), "head")
    yield


# Media URLs a test sends name this host: the API's probes of them reach the sandbox's CDN.
CDN_HOST = "cdn.sandbox.test"
CDN_URL = f"http://{CDN_HOST}:{SANDBOX_PORT}/_sandbox/media"


class FakeDNS:
    """The one resolver of host names in tests: the API's (sends' media URLs, customer
    webhook URLs) and the worker's webhook dispatcher's. CDN_HOST is the sandbox, a name in
    `answers` (a test's) resolves as it says, and no other name is looked up: no traffic
    leaves the machine. `calls` notes the lookups; `clean` forgets both."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.calls: list[tuple[str, int]] = []

    def reset(self) -> None:
        self.answers = {}
        self.calls = []

    async def __call__(self, host: str, port: int) -> list[str]:
        from app.core.addresses import Unresolvable

        self.calls.append((host, port))
        if host in self.answers:
            return list(self.answers[host])
        if host == CDN_HOST:
            return ["127.0.0.1"]
        raise Unresolvable(f"cannot resolve {host}")


DNS = FakeDNS()


def api_app(settings: Settings, *, express: bool = True) -> FastAPI:
    """The API as the tests serve it: its host names resolved by DNS."""
    from app.main import create_app

    return create_app(settings, express=express, resolver=DNS)


async def _serve(app, port: int) -> tuple[uvicorn.Server, asyncio.Task]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task


@dataclass
class Stack:
    settings: Settings
    api_url: str
    sandbox_url: str
    sessionmaker: object
    worker: object
    api: FastAPI

    async def sandbox(self, method: str, path: str, **kwargs) -> httpx.Response:
        # Emitting posts webhooks to the API and waits for its answers: slow on a busy machine.
        async with httpx.AsyncClient(base_url=self.sandbox_url, timeout=WAIT_SECONDS) as client:
            response = await client.request(method, path, **kwargs)
            response.raise_for_status()
            return response


@pytest.fixture(scope="session")
async def stack(settings: Settings, database: None) -> AsyncIterator[Stack]:
    from app.sandbox.app import create_app as create_sandbox
    from app.worker import create_worker

    sandbox, sandbox_task = await _serve(create_sandbox(settings), SANDBOX_PORT)
    app = api_app(settings)
    api, api_task = await _serve(app, API_PORT)
    worker = create_worker(handle_signals=False)
    worker_task = asyncio.create_task(worker.async_run())

    async def dispatcher_started() -> bool:
        return "webhooks" in worker.ctx

    await wait_for(dispatcher_started)
    worker.ctx["webhooks"].resolver = DNS
    engine = create_engine(settings, pool_size=2)
    yield Stack(settings, API_URL, SANDBOX_URL, create_sessionmaker(engine), worker, app)
    worker_task.cancel()
    # A job cut off mid-finish (a sweep runs every second) re-raises its cancellation here.
    # Bounded, as is the servers' exit: the run's verdict is in, and a stop that hangs must
    # not turn it into a timeout (the worker's own stop is tested in test_jobs.py).
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(worker.close(), STOP_SECONDS)
    for server in (api, sandbox):
        server.should_exit = True
    _, late = await asyncio.wait([api_task, sandbox_task], timeout=STOP_SECONDS)
    for server in (api, sandbox):
        server.force_exit = True
    await asyncio.gather(*late, return_exceptions=True)
    await engine.dispose()


@pytest.fixture(scope="session")
async def plain_api(stack: Stack) -> AsyncIterator[str]:
    """A second API on the same database and Redis, without the express lane: the FastAPI
    routes alone, to compare the lane's answers with. Its URL."""
    plain = api_app(stack.settings, express=False)
    server, task = await _serve(plain, PLAIN_API_PORT)
    yield f"http://127.0.0.1:{PLAIN_API_PORT}"
    server.should_exit = True
    await task


async def _truncate(stack: Stack) -> None:
    """TRUNCATE every table. The worker's webhook dispatcher is not paused with its jobs, and
    its reads can deadlock with the TRUNCATE's locks: PostgreSQL then aborts one of the two,
    and this tries again."""
    for attempt in range(5):
        try:
            async with stack.sessionmaker() as session, session.begin():
                await session.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
            return
        except DBAPIError as error:
            if "deadlock detected" not in str(error) or attempt == 4:
                raise
            await asyncio.sleep(0.1)


async def empty(stack: Stack, *, then_pick_jobs: bool = True) -> None:
    """Empty tables, queue and sandbox, with the worker idle meanwhile: a job left over from
    before must not race the TRUNCATE. With then_pick_jobs=False, the worker stays idle (so
    that a test can see the jobs its requests queued)."""
    worker = stack.worker
    worker.allow_pick_jobs = False
    try:
        await wait_for(_worker_idle(worker))
        await _truncate(stack)
        await worker.pool.flushdb()
    finally:
        worker.allow_pick_jobs = then_pick_jobs
    # What the last test sent reached "Meta": its texts must not be in the logs either.
    for record in (await stack.sandbox("GET", "/_sandbox/sent")).json()["data"]:
        sent_text = (record.get("message") or {}).get("text") or ""
        if len(sent_text) >= MEMORABLE_TEXT:
            SECRETS_USED.add(sent_text)
    await stack.sandbox("DELETE", "/_sandbox/sent")
    await stack.sandbox("POST", "/_sandbox/faults", json={})


@pytest.fixture
async def clean(stack: Stack) -> AsyncIterator[Stack]:
    """Empty tables, queue and sandbox before a test; DNS as it starts."""
    await empty(stack)
    DNS.reset()
    yield stack


def _worker_idle(worker):
    async def idle() -> bool:
        return all(task.done() for task in worker.tasks.values())

    return idle


async def worker_idle(stack: Stack) -> None:
    """Wait until the worker has nothing to do now: no job due in its queue (a running job
    stays there until it ends) and none running. What the jobs so far had to do is then done,
    so a test may assert that something did not happen."""
    worker = stack.worker

    async def nothing_due() -> bool:
        due = await worker.pool.zcount(worker.queue_name, "-inf", time.time() * 1000)
        return due == 0 and all(task.done() for task in worker.tasks.values())

    await wait_for(nothing_due)


@dataclass
class Account:
    """A connected Instagram profile and an API key that sees it, through the SDK."""

    client: PostProxy
    token: str
    profile_id: str
    platform_id: str


IG_ACCOUNT_ID = "17841400000000001"


async def connect(
    stack: Stack,
    *,
    platform_id: str = IG_ACCOUNT_ID,
    group: str = "default",
    key_group: str | None = None,
    token: str = "sandbox-token",
) -> Account:
    from app.api_keys import service as keys
    from app.core import ids
    from app.profiles import service as profiles

    async with stack.sessionmaker() as session, session.begin():
        profile_group = await profiles.ensure_group(session, group)
        profile = await profiles.add_profile(
            session,
            stack.settings,
            platform_id=platform_id,
            access_token=token,
            connection="instagram_login",
            group=profile_group,
            username="acme",
        )
        key_group_row = await profiles.ensure_group(session, key_group) if key_group else None
        _, api_token = await keys.create(
            session, "test", key_group_row.id if key_group_row else None
        )
    SECRETS_USED.update({token, api_token})
    client = PostProxy(api_token, base_url=stack.api_url)
    return Account(client, api_token, ids.encode(ids.Kind.PROFILE, profile.id), platform_id)


@pytest.fixture
async def account(clean: Stack) -> AsyncIterator[Account]:
    account = await connect(clean)
    yield account
    await account.client.close()


async def wait_for(predicate, timeout: float = WAIT_SECONDS, interval: float = 0.02):
    """Poll an async predicate until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate.__name__}")
        await asyncio.sleep(interval)
