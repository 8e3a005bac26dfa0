"""The `dmrelay` command."""

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from app.core.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.api_keys.schemas import KeyInfo

Result = TypeVar("Result")


class KeyRecord(TypedDict):
    """An API key as `keys list --json` and `keys revoke --json` print it."""

    id: str
    name: str
    profile_group_id: str | None
    profile_group: str | None
    created_at: str
    revoked_at: str | None


# Where `profiles add` takes the access token from when --access-token is not given.
ACCESS_TOKEN_ENV = "DMRELAY_ACCESS_TOKEN"


def _print(as_json: bool, record: object, human: str) -> None:
    print(json.dumps(record) if as_json else human)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    )


def cmd_migrate(args: argparse.Namespace) -> None:
    import asyncpg

    from app.core import preflight
    from app.core.migrate import migrate

    settings = preflight.check(preflight.Role.MIGRATE, "migrate")
    deadline = time.monotonic() + args.wait
    while True:
        try:
            migrate(settings)
            break
        except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as error:
            # Down, or not up yet (a container starting beside it): waited for up to --wait.
            reason = str(error) or type(error).__name__
            if time.monotonic() >= deadline:
                preflight.fail("migrate", f"PostgreSQL is not answering ({reason})")
            preflight.warn("migrate", f"PostgreSQL is not answering ({reason}); trying again")
            time.sleep(1)
        except asyncpg.PostgresError as error:
            preflight.fail("migrate", f"PostgreSQL refused: {error}")
    print("database is up to date")


def _check_http(command: str, url: str) -> None:
    """Exit 0 if `url` answers 200, else 1 with its sentence: for an orchestrator's check."""
    import httpx

    from app.core import preflight

    try:
        answer = httpx.get(url, timeout=5.0)
    except httpx.HTTPError as error:
        preflight.fail(command, f"nothing answers at {url} ({error})")
    if answer.status_code != 200:
        try:
            reason = answer.json().get("error", answer.text)
        except ValueError:
            reason = answer.text
        preflight.fail(command, f"{url} answered {answer.status_code}: {reason}")
    print(f"{url}: ok")


def cmd_api(args: argparse.Namespace) -> None:
    from app.core import preflight

    if args.check:
        preflight.check(preflight.Role.OTHER, "api")
        _check_http("api --check", f"http://127.0.0.1:{args.port}/readyz")
        return
    settings = preflight.check(preflight.Role.API, "api")
    import uvicorn

    from app.core import logs

    _metrics_directory(args.workers)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=logs.dict_config(settings.log_format, settings.log_level),
        # The API writes its own access line (app/core/metrics.py:HttpMetrics): the route's
        # template, not the path and query (where Meta's handshake puts the verify token).
        access_log=False,
    )


def _metrics_directory(workers: int) -> None:
    """Several API processes share their metrics through files (prometheus-client's
    multiprocess mode): in PROMETHEUS_MULTIPROC_DIR if given, else in a directory of our own;
    emptied, as the processes that wrote there are gone."""
    from app.core.metrics import MULTIPROC_ENV

    directory = os.environ.get(MULTIPROC_ENV)
    if directory is None and workers > 1:
        import tempfile

        directory = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="dmrelay-metrics-")
    if directory:
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.remove(os.path.join(directory, name))


def cmd_worker(args: argparse.Namespace) -> None:
    from app.core import preflight

    if args.check:
        settings = preflight.check(preflight.Role.OTHER, "worker")
        if settings.worker_http_port is None:
            preflight.fail(
                "worker --check",
                "WORKER_HTTP_PORT is not set, so the worker serves no health check",
            )
        _check_http("worker --check", f"http://127.0.0.1:{settings.worker_http_port}/healthz")
        return
    settings = preflight.check(preflight.Role.WORKER, "worker")
    from app.core import logs
    from app.worker import run

    logs.configure(settings.log_format, settings.log_level)
    run()


def cmd_sandbox(args: argparse.Namespace) -> None:
    from app.sandbox import run

    run(host=args.host, port=args.port)


def cmd_mcp(args: argparse.Namespace) -> None:
    from app.mcp.server import run_stdio

    asyncio.run(run_stdio(get_settings()))


def cmd_up(args: argparse.Namespace) -> None:
    from app.devserver import up

    up(api_port=args.port, sandbox_port=args.sandbox_port, sandbox=args.sandbox)


async def _with_session(work: "Callable[[AsyncSession], Awaitable[Result]]") -> Result:
    """`work` in one transaction, committed by `session_scope` (the one place), which then
    queues the jobs it asked for, as the API's requests do."""
    from contextlib import asynccontextmanager

    from app.core.db import create_engine, create_sessionmaker, session_scope
    from app.core.queue import arq_pool

    settings = get_settings()
    engine = create_engine(settings, pool_size=1)
    redis = arq_pool(settings)
    try:
        scope = asynccontextmanager(session_scope)(create_sessionmaker(engine), redis)
        async with scope as session:
            return await work(session)
    finally:
        await redis.aclose()
        await engine.dispose()


def cmd_keys_create(args: argparse.Namespace) -> None:
    from app.api_keys import service as keys
    from app.core import ids
    from app.profiles.service import ensure_group

    async def work(session: "AsyncSession") -> dict[str, str | None]:
        group = await ensure_group(session, args.profile_group) if args.profile_group else None
        key, token = await keys.create(session, args.name, group.id if group else None)
        return {
            "id": ids.encode(ids.Kind.API_KEY, key.id),
            "name": key.name,
            "token": token,
            "profile_group_id": ids.encode(ids.Kind.PROFILE_GROUP, group.id) if group else None,
        }

    record = asyncio.run(_with_session(work))
    scope = f"profile group {args.profile_group}" if args.profile_group else "every profile group"
    _print(args.json, record, f"API key {record['id']} ({scope}); shown once:\n{record['token']}")


def _key_record(key: "KeyInfo") -> KeyRecord:
    from app.core import ids

    return {
        "id": ids.encode(ids.Kind.API_KEY, key.id),
        "name": key.name,
        "profile_group_id": (
            ids.encode(ids.Kind.PROFILE_GROUP, key.profile_group_id)
            if key.profile_group_id is not None
            else None
        ),
        "profile_group": key.profile_group,
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


def _when(iso: str | None) -> str:
    if iso is None:
        return ""
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cmd_keys_list(args: argparse.Namespace) -> None:
    from app.api_keys import service as keys

    records = [_key_record(key) for key in asyncio.run(_with_session(keys.list_keys))]
    rows = [
        [
            r["id"],
            r["name"],
            r["profile_group"] or "(all)",
            _when(r["created_at"]),
            _when(r["revoked_at"]),
        ]
        for r in records
    ]
    human = _table(["ID", "NAME", "PROFILE GROUP", "CREATED", "REVOKED"], rows)
    _print(args.json, records, human if records else "no API keys")


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    from app.api_keys import service as keys
    from app.core import ids

    serial = ids.decode(ids.Kind.API_KEY, args.id)
    if serial is None:
        sys.exit(f"no API key has the id {args.id!r} (see `dmrelay keys list`)")

    async def revoke() -> tuple[KeyRecord | None, str | None]:
        key = await _with_session(lambda session: keys.revoke(session, serial))
        if key is None:
            return None, None
        # Also when it was revoked already: this repeats a signal that may have failed.
        redis = Redis.from_url(get_settings().redis_url)
        try:
            await keys.signal_revocation(redis)
        except (RedisError, OSError) as error:
            return _key_record(key), str(error)
        finally:
            await redis.aclose()
        return _key_record(key), None

    record, signal_error = asyncio.run(revoke())
    if record is None:
        sys.exit(f"no API key has the id {args.id!r} (see `dmrelay keys list`)")
    if signal_error is not None:
        sys.exit(
            f"API key {args.id} is revoked, but the API processes could not be told "
            f"({signal_error}): it keeps working for up to {keys.CACHE_SECONDS:.0f} s. "
            "Run this command again once Redis is reachable."
        )
    _print(
        args.json,
        record,
        f"API key {record['id']} ({record['name']}) is revoked since {record['revoked_at']}; "
        "every API process refuses it within a second",
    )


def _access_token(given: str | None) -> str:
    """The access token from stdin (`-`), the environment (no flag) or, with a warning, the
    command line."""
    if given == "-":
        token = getpass.getpass("Access token: ") if sys.stdin.isatty() else sys.stdin.read()
    elif given is None:
        token = os.environ.get(ACCESS_TOKEN_ENV, "")
        if not token.strip():
            sys.exit(f"no access token: pipe it in with --access-token - or set {ACCESS_TOKEN_ENV}")
    else:
        print(
            "warning: a token given on the command line stays in your shell history and is "
            f"visible to other users in `ps`; use --access-token - (stdin) or {ACCESS_TOKEN_ENV}",
            file=sys.stderr,
        )
        token = given
    if not token.strip():
        sys.exit("the access token is empty")
    return token.strip()


def cmd_profiles_add(args: argparse.Namespace) -> None:
    from app.connections.service import connect_profile
    from app.profiles import service as profiles
    from app.profiles.models import Connection
    from app.profiles.schemas import ProfileOut

    if not get_settings().secret_key:
        sys.exit("SECRET_KEY is not set: it encrypts the access token before it is stored")
    if args.connection == Connection.FACEBOOK_LOGIN and not args.page_id:
        sys.exit("--page-id is required with --connection facebook_login")
    access_token = _access_token(args.access_token)

    async def work(session: "AsyncSession") -> dict[str, Any]:
        group = await profiles.ensure_group(session, args.profile_group)
        profile = await connect_profile(
            session,
            get_settings(),
            platform_id=args.platform_id,
            access_token=access_token,
            connection=args.connection,
            group=group,
            username=args.username,
            name=args.name,
            page_id=args.page_id,
            move=args.move,
        )
        return ProfileOut.of(profile).model_dump(mode="json")

    try:
        record = asyncio.run(_with_session(work))
    except profiles.ProfileInAnotherGroup as refusal:
        sys.exit(f"{refusal.message}: pass --move to move it (nothing was changed)")
    except profiles.ProfileBeingErased as refusal:
        sys.exit(f"{refusal.message} (nothing was changed)")
    _print(args.json, record, f"profile {record['id']} ({record['name']}) is connected")


def parser() -> argparse.ArgumentParser:
    from app.profiles.models import Connection
    from app.profiles.service import DEFAULT_GROUP

    root = argparse.ArgumentParser(prog="dmrelay", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    migrate = commands.add_parser("migrate", help="create the database if missing, then upgrade it")
    migrate.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to this long for PostgreSQL to answer (a container starting beside it)",
    )

    api = commands.add_parser("api", help="serve the REST API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1)
    api.add_argument(
        "--check",
        action="store_true",
        help="ask the API on --port whether it is ready (GET /readyz): exit 0 if so, else 1",
    )

    worker = commands.add_parser("worker", help="run the background worker")
    worker.add_argument(
        "--check",
        action="store_true",
        help="ask the worker on WORKER_HTTP_PORT whether it is healthy: exit 0 if so, else 1",
    )

    commands.add_parser(
        "mcp", help="serve the MCP tools over stdio, with the API key in DMRELAY_API_KEY"
    )

    sandbox = commands.add_parser("sandbox", help="serve the sandbox Graph API (a fake of Meta's)")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8001)

    up = commands.add_parser("up", help="run everything locally: migrate, API, worker, sandbox")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--sandbox-port", type=int, default=8001)
    up.add_argument(
        "--sandbox",
        action="store_true",
        help="use the sandbox Graph API even though Meta settings are given",
    )

    keys = commands.add_parser("keys", help="API keys").add_subparsers(dest="keys", required=True)
    create = keys.add_parser("create", help="create an API key (its token is shown once)")
    create.add_argument("--name", required=True)
    create.add_argument("--profile-group", help="confine the key to this group (default: all)")
    create.add_argument("--json", action="store_true")
    listing = keys.add_parser("list", help="list API keys (never their tokens)")
    listing.add_argument("--json", action="store_true")
    revoke = keys.add_parser("revoke", help="revoke an API key: refused within a second")
    revoke.add_argument("id", help="the key's id, as `keys list` shows it")
    revoke.add_argument("--json", action="store_true")

    profiles = commands.add_parser("profiles", help="connected Instagram accounts")
    add = profiles.add_subparsers(dest="profiles", required=True).add_parser(
        "add", help="connect an Instagram professional account"
    )
    add.add_argument("--platform", choices=["instagram"], required=True)
    add.add_argument("--platform-id", required=True, help="the Instagram account id (IG_ID)")
    add.add_argument(
        "--access-token",
        metavar="TOKEN|-",
        help=f"'-' reads it from stdin; omitted, it is read from {ACCESS_TOKEN_ENV}. A token "
        "given here works, but stays in shell history and shows in `ps`",
    )
    add.add_argument("--username")
    add.add_argument("--name")
    add.add_argument("--connection", choices=list(Connection), default=Connection.INSTAGRAM_LOGIN)
    add.add_argument("--page-id", help="the Facebook Page id (facebook_login only)")
    add.add_argument("--profile-group", default=DEFAULT_GROUP)
    add.add_argument(
        "--move",
        action="store_true",
        help="move the account into --profile-group if it is connected in another group",
    )
    add.add_argument("--json", action="store_true")
    return root


HANDLERS = {
    ("migrate", None): cmd_migrate,
    ("api", None): cmd_api,
    ("worker", None): cmd_worker,
    ("mcp", None): cmd_mcp,
    ("sandbox", None): cmd_sandbox,
    ("up", None): cmd_up,
    ("keys", "create"): cmd_keys_create,
    ("keys", "list"): cmd_keys_list,
    ("keys", "revoke"): cmd_keys_revoke,
    ("profiles", "add"): cmd_profiles_add,
}


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    subcommand = getattr(args, "keys", None) or getattr(args, "profiles", None)
    if args.command not in ("api", "worker", "migrate"):
        from app.core import preflight

        # A wrong setting is one line here too, not a traceback.
        preflight.check(preflight.Role.OTHER, " ".join(filter(None, [args.command, subcommand])))
    HANDLERS[(args.command, subcommand)](args)


if __name__ == "__main__":
    main()
