"""The sandbox stays out of production: its control endpoints live only in the sandbox app,
and `dmrelay up` never stands the sandbox in for Meta when Meta settings are given, unless
told to. With no Meta setting at all (a fresh machine, `make run`), it runs the sandbox."""

import asyncio
import os
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from postproxy import PostProxy
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from app import devserver
from app.core.settings import Settings
from app.main import create_app
from app.sandbox.control import control
from tests.cli import ROOT
from tests.conftest import _free_port, wait_for

NO_META = {
    "meta_app_secret": None,
    "instagram_app_secret": None,
    "meta_verify_token": None,
    "meta_graph_url": None,
    "secret_key": None,
}


def _settings(**values: str) -> Settings:
    return Settings(_env_file=None, **{**NO_META, **values})


async def test_the_api_app_has_no_sandbox_route():
    app = create_app()
    assert not [path for path in app.openapi()["paths"] if path.startswith("/_sandbox")]
    # Routing alone answers (no lifespan, so nothing is connected): no control path matches,
    # by path or by method.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as http:
        for route in control.routes:
            path = route.path.replace("{name}", "x")
            for method in route.methods:
                answer = await http.request(method, path)
                assert answer.status_code == 404, (method, path)


async def test_the_running_api_does_not_answer_sandbox_paths(stack):
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        assert (await http.get("/_sandbox/sent")).status_code == 404
        assert (await http.post("/_sandbox/faults", json={})).status_code in (404, 405)


def test_up_uses_the_sandbox_when_no_meta_setting_is_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env, use_sandbox = devserver._environment(_settings(), 8000, 8001)
    assert use_sandbox
    assert env["META_GRAPH_URL"] == "http://127.0.0.1:8001"
    assert env["SECRET_KEY"] and env["META_APP_SECRET"]  # generated, for local use


@pytest.mark.parametrize(
    "given",
    [
        {"meta_verify_token": "mine"},
        {"meta_graph_url": "https://graph.instagram.com"},
        {"meta_verify_token": "mine", "secret_key": "k"},
    ],
)
def test_up_refuses_the_sandbox_in_place_of_meta_settings_it_was_given(
    given, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as refusal:
        devserver._environment(_settings(**given), 8000, 8001)
    assert "--sandbox" in str(refusal.value.code)
    assert not (tmp_path / ".dmrelay").exists()  # refused before anything was set up


def test_up_runs_the_sandbox_when_told_to_whatever_is_configured(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("META_GRAPH_URL", "https://graph.instagram.com")
    settings = _settings(meta_verify_token="mine", meta_graph_url="https://graph.instagram.com")
    env, use_sandbox = devserver._environment(settings, 8000, 8001, sandbox=True)
    assert use_sandbox
    assert env["META_GRAPH_URL"] == "http://127.0.0.1:8001"


@pytest.mark.parametrize("secret", ["meta_app_secret", "instagram_app_secret"])
def test_up_talks_to_meta_with_an_app_secret(secret, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = _settings(**{secret: "s", "secret_key": "k", "meta_verify_token": "v"})
    _, use_sandbox = devserver._environment(settings, 8000, 8001)
    assert not use_sandbox
    assert not (tmp_path / ".dmrelay").exists()  # no sandbox secrets either
    with pytest.raises(SystemExit, match="SECRET_KEY"):
        devserver._environment(_settings(**{secret: "s"}), 8000, 8001)


def _fresh_machine_env(**extra: str) -> dict[str, str]:
    """The test session's environment without a single dmrelay setting but those given."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SETTING_NAMES}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


_SETTING_NAMES = {name.upper() for name in Settings.model_fields} | {"DMRELAY_ACCESS_TOKEN"}


async def test_dmrelay_up_refuses_half_a_meta_configuration(tmp_path):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "up",
        cwd=tmp_path,
        env=_fresh_machine_env(META_VERIFY_TOKEN="mine", DATABASE_URL="postgresql://nowhere"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode != 0
    assert "META_VERIFY_TOKEN is set" in stderr.decode()
    assert "--sandbox" in stderr.decode()


async def _up(cwd: Path, env: dict[str, str], api_port: int, sandbox_port: int):
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "up",
        "--port",
        str(api_port),
        "--sandbox-port",
        str(sandbox_port),
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )


async def _printed(process) -> tuple[list[str], dict[str, str]]:
    """What `dmrelay up` printed until its `export NAME=value ...` line, and those variables."""
    lines: list[str] = []

    async def read() -> dict[str, str]:
        while line := (await process.stdout.readline()).decode():
            lines.append(line)
            if line.lstrip().startswith("export "):
                return dict(word.split("=", 1) for word in shlex.split(line)[1:])
        raise AssertionError(f"dmrelay up exited with {await process.wait()}:\n{''.join(lines)}")

    return lines, await asyncio.wait_for(read(), 180)


async def _stop(process) -> int:
    """SIGTERM, as Ctrl-C would: its exit code once everything is stopped."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    return process.returncode


async def test_dmrelay_up_on_a_fresh_machine_runs_against_the_sandbox(clean, tmp_path):
    """`make run` with no Meta configuration: everything comes up, with a sandbox profile
    and a key that sees it. Its own database; Redis is the test session's, emptied by
    `clean`. Given both URLs, it starts no server of its own."""
    test_database = make_url(clean.settings.database_url).set(drivername="postgresql")
    up_database = f"{test_database.database}_up"
    database_url = test_database.set(database=up_database).render_as_string(hide_password=False)
    api_port, sandbox_port = _free_port(), _free_port()
    env = _fresh_machine_env(DATABASE_URL=database_url, REDIS_URL=clean.settings.redis_url)
    process = await _up(tmp_path, env, api_port, sandbox_port)
    try:
        lines, variables = await _printed(process)
        assert "PostgreSQL: postgresql://" in "".join(lines), lines
        assert not (tmp_path / ".dmrelay" / "postgres").exists()
        assert not (tmp_path / ".dmrelay" / "redis").exists()
        headers = {"Authorization": f"Bearer {variables['DMRELAY_KEY']}"}
        async with httpx.AsyncClient(headers=headers) as http:
            profiles = (await http.get(f"http://127.0.0.1:{api_port}/api/profiles")).json()
            assert [p["username"] for p in profiles["data"]] == ["sandbox_shop"]
            sent = await http.get(f"http://127.0.0.1:{sandbox_port}/_sandbox/sent")
            assert sent.status_code == 200
    finally:
        await _stop(process)
        admin = await asyncpg.connect(
            test_database.set(database="postgres").render_as_string(hide_password=False)
        )
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{up_database}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A new directory that PostgreSQL may reach when it runs as another user (as it does
    when we are root); pytest's tmp_path is private to us."""
    path = Path(tempfile.mkdtemp(prefix="dmrelay-up-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_dmrelay_up_with_no_url_runs_embedded_servers_that_keep_their_data(workdir):
    """`make run` on a machine with neither PostgreSQL nor Redis: dmrelay up starts both,
    from the embedded extra, on Unix sockets in .dmrelay/; a message goes out through the
    sandbox; Ctrl-C (SIGTERM) stops them cleanly, and the next run finds the data again."""
    data = workdir / ".dmrelay"
    api_port, sandbox_port = _free_port(), _free_port()
    env = _fresh_machine_env()
    process = await _up(workdir, env, api_port, sandbox_port)
    try:
        lines, variables = await _printed(process)
        printed = "".join(lines)
        assert "PostgreSQL: embedded" in printed and "Redis: embedded" in printed, printed
        # Unix sockets only: PostgreSQL's TCP addresses (postmaster.pid's 6th line) are
        # none, and Redis's port is 0.
        postmaster = (data / "postgres" / "data" / "postmaster.pid").read_text().splitlines()
        assert postmaster[5] == "", postmaster
        async with PostProxy(
            variables["DMRELAY_KEY"], base_url=f"http://127.0.0.1:{api_port}"
        ) as client:
            message = await client.messages.send(variables["CHAT"], body="Hello, embedded!")

            async def published():
                got = await client.messages.get(message.id)
                return got if got.status == "published" else None

            delivered = await wait_for(published)
        async with httpx.AsyncClient() as http:
            sent = (await http.get(f"http://127.0.0.1:{sandbox_port}/_sandbox/sent")).json()
        assert [s["message"]["text"] for s in sent["data"]] == ["Hello, embedded!"]
        redis = Redis(unix_socket_path=str(data / "redis" / "redis.sock"))
        try:
            assert await redis.config_get("port") == {"port": "0"}
            await redis.set("test:kept", "yes")
        finally:
            await redis.aclose()
    finally:
        assert await _stop(process) == 0
    # Stopped cleanly: no server left running.
    assert not (data / "postgres" / "data" / "postmaster.pid").exists()
    assert not (data / "redis" / "redis.sock").exists()

    process = await _up(workdir, env, api_port, sandbox_port)
    try:
        _, variables = await _printed(process)
        async with PostProxy(
            variables["DMRELAY_KEY"], base_url=f"http://127.0.0.1:{api_port}"
        ) as client:
            again = await client.messages.get(message.id)
            assert (again.status, again.external_id) == ("published", delivered.external_id)
        redis = Redis(unix_socket_path=str(data / "redis" / "redis.sock"))
        try:
            assert await redis.get("test:kept") == b"yes"
        finally:
            await redis.aclose()
    finally:
        assert await _stop(process) == 0
    assert not (data / "postgres" / "data" / "postmaster.pid").exists()
