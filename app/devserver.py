"""`dmrelay up`: everything on one machine, for trying dmrelay and for development.

Migrates, then runs the API, a worker and, when no Meta setting is given (or --sandbox is),
the sandbox Graph API, with a connected sandbox profile and a fresh API key printed to try
them with. With Meta settings it never falls back to the sandbox on its own: a half-done
configuration would otherwise send real customers' messages nowhere, and mark them sent.
"""

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.cli import ACCESS_TOKEN_ENV
from app.core.settings import Settings, get_settings

# Secrets generated for local use, kept so that stored tokens stay readable across runs.
DEV_SECRETS = Path(".dmrelay") / "dev-secrets.json"
SANDBOX_ACCOUNT_ID = "17841400000000001"
SANDBOX_TOKEN = "sandbox-token"


def _dev_secrets() -> dict[str, str]:
    if DEV_SECRETS.exists():
        return json.loads(DEV_SECRETS.read_text())
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


def _wait_until_up(url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{' '.join(process.args)} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    sys.exit(f"{url} did not come up within {timeout:.0f}s")


def up(api_port: int, sandbox_port: int, sandbox: bool = False) -> None:
    env, use_sandbox = _environment(get_settings(), api_port, sandbox_port, sandbox)
    print(_run(["migrate"], env).stdout.strip())

    processes: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=env)
        processes.append(process)
        return process

    try:
        if use_sandbox:
            sandbox = start("sandbox", "--port", str(sandbox_port))
            _wait_until_up(f"http://127.0.0.1:{sandbox_port}/_sandbox/sent", sandbox)
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
        _print_welcome(api_port, sandbox_port, key["token"], profile["id"] if use_sandbox else None)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
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


def _print_welcome(api_port: int, sandbox_port: int, token: str, profile_id: str | None) -> None:
    api = f"http://127.0.0.1:{api_port}"
    lines = [
        "",
        f"dmrelay is running on {api} (docs: {api}/docs). Your API key, shown once:",
        f"  export DMRELAY_KEY={token}",
        "",
        "Try it:",
        f'  curl -s {api}/api/profiles -H "Authorization: Bearer $DMRELAY_KEY"',
    ]
    if profile_id:
        lines += [
            f"  curl -s -X POST {api}/api/profiles/{profile_id}/chats "
            "-H \"Authorization: Bearer $DMRELAY_KEY\" -H 'Content-Type: application/json' "
            '-d \'{"participant_external_id": "1602510301006188"}\'',
            f"  curl -s -X POST {api}/api/chats/<chat id>/messages "
            "-H \"Authorization: Bearer $DMRELAY_KEY\" -H 'Content-Type: application/json' "
            '-d \'{"body": "Hello!"}\'',
            "",
            f"The sandbox Graph API on http://127.0.0.1:{sandbox_port} stands in for Meta:",
            f"  curl -s http://127.0.0.1:{sandbox_port}/_sandbox/sent",
            f"  curl -s -X POST http://127.0.0.1:{sandbox_port}/_sandbox/inbound "
            "-H 'Content-Type: application/json' "
            f'-d \'{{"account_id": "{SANDBOX_ACCOUNT_ID}", "sender_id": '
            '"1602510301006188", "text": "Hi!"}\'',
        ]
    lines += ["", "Ctrl-C stops everything."]
    print("\n".join(lines), flush=True)
