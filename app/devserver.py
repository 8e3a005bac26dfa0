"""`dmrelay up`: everything on one machine, for trying dmrelay and for development.

Migrates, then runs the API, a worker and, when no Meta setting is given (or --sandbox is),
the sandbox Graph API, with a connected sandbox profile, a chat with a sandbox customer and a
fresh API key, printed as `export` lines (and written to `.dmrelay/env`) to try them with.
With no DATABASE_URL or REDIS_URL, it first starts embedded servers for what is missing
(app/embedded.py), their data in `.dmrelay/`, and stops them when it stops.
With Meta settings it never falls back to the sandbox on its own: a half-done configuration
would otherwise send real customers' messages nowhere, and mark them sent.
"""

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import httpx

from app import embedded
from app.cli import ACCESS_TOKEN_ENV
from app.core.settings import Settings, get_settings

# The local data directory: the embedded servers' data, and the files below.
DATA_DIR = Path(".dmrelay")
# Secrets generated for local use, kept so that stored tokens stay readable across runs.
DEV_SECRETS = DATA_DIR / "dev-secrets.json"
# The variables the README's walkthrough uses, for `. .dmrelay/env` in another shell.
DEV_ENV = DATA_DIR / "env"
SANDBOX_ACCOUNT_ID = "17841400000000001"
SANDBOX_TOKEN = "sandbox-token"
# The sandbox customer the demo chat is with (any IGSID works with the sandbox).
SANDBOX_CUSTOMER_ID = "1602510301006188"


def _dev_secrets() -> dict[str, str]:
    if DEV_SECRETS.exists():
        values: dict[str, str] = json.loads(DEV_SECRETS.read_text())
        return values
    values = {
        "SECRET_KEY": secrets.token_urlsafe(32),
        "META_APP_SECRET": secrets.token_hex(16),
        "META_VERIFY_TOKEN": secrets.token_urlsafe(12),
    }
    DEV_SECRETS.parent.mkdir(exist_ok=True)
    DEV_SECRETS.write_text(json.dumps(values))
    DEV_SECRETS.chmod(0o600)
    return values


# Settings that say dmrelay is meant to talk to Meta (or to a Graph API of the user's choice).
META_SETTINGS = ("meta_app_secret", "instagram_app_secret", "meta_verify_token", "meta_graph_url")


def _environment(
    settings: Settings, api_port: int, sandbox_port: int, sandbox: bool = False
) -> tuple[dict[str, str], bool]:
    """The processes' environment, and whether the sandbox stands in for Meta."""
    given = [name.upper() for name in META_SETTINGS if getattr(settings, name)]
    use_sandbox = sandbox or not given
    if not use_sandbox:
        if not (settings.meta_app_secret or settings.instagram_app_secret):
            sys.exit(
                f"{', '.join(given)} is set, but neither META_APP_SECRET nor "
                "INSTAGRAM_APP_SECRET: set one to talk to Meta, or pass --sandbox to run "
                "against the sandbox Graph API instead"
            )
        if not settings.secret_key:
            sys.exit("SECRET_KEY must be set when dmrelay talks to Meta")
    env = dict(os.environ)
    env.setdefault("MEDIA_BASE_URL", f"http://127.0.0.1:{api_port}/media")
    # Read by a person at a terminal, not a log collector.
    env.setdefault("LOG_FORMAT", "text")
    if use_sandbox:
        env.update({k: v for k, v in _dev_secrets().items() if k not in env})
        # Asked for the sandbox, the Graph API is the sandbox, whatever else is configured.
        env["META_GRAPH_URL"] = f"http://127.0.0.1:{sandbox_port}"
        env.setdefault("SANDBOX_WEBHOOK_URL", f"http://127.0.0.1:{api_port}/webhooks/instagram")
        # The sandbox serves attachments from 127.0.0.1, which real downloads must not reach.
        env.setdefault("MEDIA_ALLOW_PRIVATE_HOSTS", "true")
    return env, use_sandbox


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )


def _wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            command = cast(list[str], process.args)  # as `start` gave it
            sys.exit(f"{' '.join(command)} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    sys.exit(f"{url} did not come up within {timeout:.0f}s")


def up(api_port: int, sandbox_port: int, sandbox: bool = False) -> None:
    settings = get_settings()
    env, use_sandbox = _environment(settings, api_port, sandbox_port, sandbox)
    # From here on, SIGTERM unwinds like Ctrl-C: whatever was started is stopped. Ctrl-C too
    # when started in the background, where the shell has it ignored.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    servers = embedded.Servers(DATA_DIR)
    try:
        try:
            env.update(
                servers.start(
                    database="database_url" not in settings.model_fields_set,
                    redis="redis_url" not in settings.model_fields_set,
                )
            )
        except embedded.Unavailable as reason:
            sys.exit(
                f"{reason}\n(with no DATABASE_URL or REDIS_URL, dmrelay up runs embedded "
                "servers; set both to use your own PostgreSQL and Redis)"
            )
        print(servers.describe(env.get("DATABASE_URL", ""), env.get("REDIS_URL", "")))
        print(_run(["migrate"], env).stdout.strip(), flush=True)
        _serve(env, api_port, sandbox_port, use_sandbox)
    except KeyboardInterrupt:
        pass
    finally:
        servers.stop()


def _serve(env: dict[str, str], api_port: int, sandbox_port: int, use_sandbox: bool) -> None:
    processes: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=env)
        processes.append(process)
        return process

    try:
        if use_sandbox:
            sandbox_process = start("sandbox", "--port", str(sandbox_port))
            _wait_until_up(f"http://127.0.0.1:{sandbox_port}/_sandbox/sent", sandbox_process)
            profile = json.loads(
                _run(
                    [
                        "profiles",
                        "add",
                        "--platform",
                        "instagram",
                        "--platform-id",
                        SANDBOX_ACCOUNT_ID,
                        "--username",
                        "sandbox_shop",
                        "--json",
                    ],
                    {**env, ACCESS_TOKEN_ENV: SANDBOX_TOKEN},
                ).stdout
            )
        api = start("api", "--port", str(api_port))
        start("worker")
        _wait_until_up(f"http://127.0.0.1:{api_port}/healthz", api)
        key = json.loads(_run(["keys", "create", "--name", "local", "--json"], env).stdout)
        api_url = f"http://127.0.0.1:{api_port}"
        variables = {"DMRELAY_KEY": key["token"]}
        if use_sandbox:
            variables["PROFILE"] = profile["id"]
            variables["CHAT"] = demo_chat(api_url, key["token"], profile["id"])
        _write_env(variables)
        print(welcome(api_url, f"http://127.0.0.1:{sandbox_port}", variables), flush=True)
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
        sys.exit("a dmrelay process stopped; stopping the others")
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def demo_chat(api_url: str, token: str, profile_id: str) -> str:
    """The id of the chat between the profile and the sandbox customer, created if missing
    (the API finds the existing one on later runs)."""
    response = httpx.post(
        f"{api_url}/api/profiles/{profile_id}/chats",
        headers={"Authorization": f"Bearer {token}"},
        json={"participant_external_id": SANDBOX_CUSTOMER_ID},
        timeout=10.0,
    )
    response.raise_for_status()
    chat_id: str = response.json()["id"]
    return chat_id


def export_line(variables: dict[str, str]) -> str:
    return "export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in variables.items())


def _write_env(variables: dict[str, str]) -> None:
    # It holds an API key: readable by its owner only, like the secrets beside it.
    DEV_ENV.parent.mkdir(exist_ok=True)
    DEV_ENV.touch(mode=0o600)
    DEV_ENV.chmod(0o600)
    DEV_ENV.write_text(export_line(variables) + "\n")


def welcome(api_url: str, sandbox_url: str, variables: dict[str, str]) -> str:
    auth = '-H "Authorization: Bearer $DMRELAY_KEY"'
    lines = [
        "",
        f"dmrelay is running on {api_url} (docs: {api_url}/docs).",
        f"In another shell, set these (or run `. {DEV_ENV}`); the API key is shown once:",
        "",
        f"  {export_line(variables)}",
        "",
        "Try it:",
        f"  curl -s {api_url}/api/profiles {auth}",
    ]
    if "CHAT" in variables:
        lines += [
            f"  curl -s -X POST {api_url}/api/chats/$CHAT/messages {auth} "
            "-H 'Content-Type: application/json' -d '{\"body\": \"Hello!\"}'",
            f"  curl -s {api_url}/api/chats/$CHAT/messages {auth}",
            "",
            f"The sandbox Graph API on {sandbox_url} stands in for Meta:",
            f"  curl -s {sandbox_url}/_sandbox/sent",
            f"  curl -s -X POST {sandbox_url}/_sandbox/inbound "
            "-H 'Content-Type: application/json' "
            f'-d \'{{"account_id": "{SANDBOX_ACCOUNT_ID}", "sender_id": '
            f'"{SANDBOX_CUSTOMER_ID}", "text": "Hi!"}}\'',
        ]
    lines += ["", "Ctrl-C stops everything."]
    return "\n".join(lines)
