"""The `dmrelay` command."""

import argparse
import asyncio
import json
import sys
from typing import Any

from app.core.settings import get_settings


def _print(as_json: bool, record: dict[str, Any], human: str) -> None:
    print(json.dumps(record) if as_json else human)


def cmd_migrate(args: argparse.Namespace) -> None:
    from app.core.migrate import migrate

    migrate(get_settings())
    print("database is up to date")


def cmd_api(args: argparse.Namespace) -> None:
    import uvicorn

    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="info",
    )


def cmd_worker(args: argparse.Namespace) -> None:
    from app.worker import run

    run()


def cmd_sandbox(args: argparse.Namespace) -> None:
    from app.sandbox import run

    run(host=args.host, port=args.port)


def cmd_up(args: argparse.Namespace) -> None:
    from app.devserver import up

    up(api_port=args.port, sandbox_port=args.sandbox_port)


async def _with_session(work):
    from app.core.db import create_engine, create_sessionmaker

    engine = create_engine(get_settings(), pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            return await work(session)
    finally:
        await engine.dispose()


def cmd_keys_create(args: argparse.Namespace) -> None:
    from app.api_keys import service as keys
    from app.core import ids
    from app.profiles.service import ensure_group

    async def work(session):
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


def cmd_profiles_add(args: argparse.Namespace) -> None:
    from app.profiles import service as profiles
    from app.profiles.schemas import ProfileOut

    if args.connection == "facebook_login" and not args.page_id:
        sys.exit("--page-id is required with --connection facebook_login")

    async def work(session):
        group = await profiles.ensure_group(session, args.profile_group)
        profile = await profiles.add_profile(
            session,
            get_settings(),
            platform_id=args.platform_id,
            access_token=args.access_token,
            connection=args.connection,
            group=group,
            username=args.username,
            name=args.name,
            page_id=args.page_id,
        )
        return ProfileOut.of(profile).model_dump(mode="json")

    record = asyncio.run(_with_session(work))
    _print(args.json, record, f"profile {record['id']} ({record['name']}) is connected")


def parser() -> argparse.ArgumentParser:
    from app.profiles.models import CONNECTIONS
    from app.profiles.service import DEFAULT_GROUP

    root = argparse.ArgumentParser(prog="dmrelay", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    commands.add_parser("migrate", help="create the database if missing, then upgrade it")

    api = commands.add_parser("api", help="serve the REST API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1)

    commands.add_parser("worker", help="run the background worker")

    sandbox = commands.add_parser("sandbox", help="serve the sandbox Graph API (a fake of Meta's)")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8001)

    up = commands.add_parser("up", help="run everything locally: migrate, API, worker, sandbox")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--sandbox-port", type=int, default=8001)

    keys = commands.add_parser("keys", help="API keys").add_subparsers(dest="keys", required=True)
    create = keys.add_parser("create", help="create an API key (its token is shown once)")
    create.add_argument("--name", required=True)
    create.add_argument("--profile-group", help="confine the key to this group (default: all)")
    create.add_argument("--json", action="store_true")

    profiles = commands.add_parser("profiles", help="connected Instagram accounts")
    add = profiles.add_subparsers(dest="profiles", required=True).add_parser(
        "add", help="connect an Instagram professional account"
    )
    add.add_argument("--platform", choices=["instagram"], required=True)
    add.add_argument("--platform-id", required=True, help="the Instagram account id (IG_ID)")
    add.add_argument("--access-token", required=True)
    add.add_argument("--username")
    add.add_argument("--name")
    add.add_argument("--connection", choices=CONNECTIONS, default="instagram_login")
    add.add_argument("--page-id", help="the Facebook Page id (facebook_login only)")
    add.add_argument("--profile-group", default=DEFAULT_GROUP)
    add.add_argument("--json", action="store_true")
    return root


HANDLERS = {
    ("migrate", None): cmd_migrate,
    ("api", None): cmd_api,
    ("worker", None): cmd_worker,
    ("sandbox", None): cmd_sandbox,
    ("up", None): cmd_up,
    ("keys", "create"): cmd_keys_create,
    ("profiles", "add"): cmd_profiles_add,
}


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    subcommand = getattr(args, "keys", None) or getattr(args, "profiles", None)
    HANDLERS[(args.command, subcommand)](args)


if __name__ == "__main__":
    main()
