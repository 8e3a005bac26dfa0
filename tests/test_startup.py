"""Starting dmrelay as an operator does: a wrong setting stops the process with one line that
names what to fix (never a traceback, never the secret itself); a dependency that is only down
does not stop it; the worker answers an orchestrator's health check; both export metrics."""

import asyncio
import contextlib
import os
import signal
import sys

import httpx
import pytest
from sqlalchemy import make_url

from app.core.migrate import revisions
from tests.cli import ROOT, dmrelay_process
from tests.conftest import _free_port, wait_for


def _one_line(done, command: str) -> str:
    assert done.code == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"dmrelay {command}: ")
    return lines[0]


def _other_database(settings, name: str) -> str:
    url = make_url(settings.database_url).set(drivername="postgresql", database=name)
    return url.render_as_string(hide_password=False)


@pytest.mark.parametrize("command", ["api", "worker"])
async def test_a_missing_secret_key_stops_the_process(command):
    port = ["--port", str(_free_port())] if command == "api" else []
    done = await dmrelay_process(command, *port, env={"SECRET_KEY": ""})
    assert "SECRET_KEY is not set" in _one_line(done, command)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"DATABASE_URL": "mysql://root:hunter2@db/x"},
            "DATABASE_URL: not a PostgreSQL URL (postgresql://",
        ),
        ({"REDIS_URL": "http://cache:6379"}, "REDIS_URL: not a Redis URL"),
        ({"META_GRAPH_URL": "graph.example"}, "META_GRAPH_URL: not an http(s) URL with a host"),
        ({"MEDIA_BASE_URL": "ftp://files/media"}, "MEDIA_BASE_URL: not an http(s) URL"),
        ({"GRAPH_TIMEOUT_SECONDS": "ten"}, "GRAPH_TIMEOUT_SECONDS: Input should be a valid number"),
        ({"WORKER_HTTP_PORT": "70000"}, "WORKER_HTTP_PORT: Input should be less than or equal"),
    ],
)
async def test_a_bad_setting_is_one_line_naming_it_without_its_value(env, says):
    done = await dmrelay_process("worker", env=env)
    line = _one_line(done, "worker")
    assert says in line
    assert "hunter2" not in line


async def test_a_database_that_does_not_exist_stops_the_api(settings):
    missing = _other_database(settings, "dmrelay_no_such_database")
    done = await dmrelay_process("api", "--port", str(_free_port()), env={"DATABASE_URL": missing})
    line = _one_line(done, "api")
    assert "'dmrelay_no_such_database' of DATABASE_URL does not exist" in line
    assert "dmrelay migrate" in line


async def test_a_redis_db_past_the_servers_count_stops_the_worker(settings):
    url = make_url(settings.redis_url.replace("redis://", "postgresql://"))
    redis = f"redis://{url.host}:{url.port}/9999"
    done = await dmrelay_process("worker", env={"REDIS_URL": redis})
    assert "Redis refused REDIS_URL" in _one_line(done, "worker")


async def test_a_database_short_of_this_versions_migrations_stops_the_worker(settings, database):
    import asyncpg

    from app.core.migrate import create_database_if_missing

    url = _other_database(settings, "dmrelay_startup_behind")
    await create_database_if_missing(url)
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("DROP TABLE IF EXISTS alembic_version")
        await connection.execute("CREATE TABLE alembic_version (version_num text)")
        await connection.execute("INSERT INTO alembic_version VALUES ('0001')")
    finally:
        await connection.close()
    done = await dmrelay_process("worker", env={"DATABASE_URL": url})
    line = _one_line(done, "worker")
    assert f"at migration 0001; this version needs {revisions().head}" in line


async def test_a_secret_key_that_cannot_read_the_stored_tokens_stops_the_worker(account):
    done = await dmrelay_process("worker", env={"SECRET_KEY": "not-the-one-they-were-sealed-with"})
    assert "SECRET_KEY cannot decrypt the access tokens" in _one_line(done, "worker")


async def test_migrate_waits_for_postgresql_then_says_it_is_not_answering(settings):
    nothing = _other_database(settings, "x").replace(
        f":{make_url(settings.database_url).port}/", f":{_free_port()}/"
    )
    done = await dmrelay_process("migrate", "--wait", "1", env={"DATABASE_URL": nothing})
    assert done.code == 1 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("dmrelay migrate: PostgreSQL is not answering")
    assert all("trying again" in line for line in lines[:-1]) and len(lines) >= 2


async def test_check_commands_say_when_nothing_answers():
    done = await dmrelay_process("api", "--check", "--port", str(_free_port()))
    assert "nothing answers at http://127.0.0.1:" in _one_line(done, "api --check")
    done = await dmrelay_process("worker", "--check")
    assert "WORKER_HTTP_PORT is not set" in _one_line(done, "worker --check")


@contextlib.asynccontextmanager
async def _worker(env: dict[str, str]):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "worker",
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 60)


async def test_the_worker_answers_its_health_check_and_exports_metrics(clean):
    port = _free_port()
    env = {"WORKER_HTTP_PORT": str(port)}
    async with _worker(env):

        async def healthy() -> bool:
            return (await dmrelay_process("worker", "--check", env=env)).code == 0

        await wait_for(healthy)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            health = (await client.get("/healthz")).json()
            metrics = await client.get("/metrics")
        assert health["status"] == "ok" and health["seconds_since_poll"] < 30
        assert metrics.status_code == 200
        assert "# TYPE dmrelay_send_attempts_total counter" in metrics.text


async def test_a_worker_waiting_for_redis_starts_and_its_check_says_so(clean):
    port = _free_port()
    env = {"WORKER_HTTP_PORT": str(port), "REDIS_URL": f"redis://127.0.0.1:{_free_port()}/0"}
    async with _worker(env) as worker:

        async def says_so():
            done = await dmrelay_process("worker", "--check", env=env)
            return done if "waiting for Redis" in done.stderr else None

        done = await wait_for(says_so)
        assert "answered 503: The worker is waiting for Redis" in _one_line(done, "worker --check")
        assert worker.returncode is None  # still running, waiting
    # Its one start-up line said why it started anyway.
    stderr = (await worker.stderr.read()).decode()
    assert "dmrelay worker: Redis is not answering" in stderr
    assert "starting anyway" in stderr


async def test_the_workers_start_up_heap_is_left_out_of_full_collections(clean):
    """What the worker's start-up built is frozen (gc.freeze): a full collection, which stops
    the event loop, walks only what came since."""
    import gc

    assert "sender" in clean.worker.ctx  # its start-up has run (in this process)
    assert gc.get_freeze_count() > 0
