"""Shared helpers for the sandbox tests: clients, senders, a real webhook receiver."""

import asyncio
import hashlib
import hmac
import json
import socket
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.core.settings import Settings

SECRET = "s"
# Explicit, because the project's conftest sets SANDBOX_WEBHOOK_URL in the environment.
PLAIN = Settings(meta_app_secret=SECRET, sandbox_webhook_url=None)
IGSID = "1602510301006188"
IG_ID = "17841470348340237"


def sandbox_client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox")


def send(client, body, *, account="me", token="tok", version="v25.0/", **options):
    return client.post(
        f"/{version}{account}/messages",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        **options,
    )


def text_body(text="hi", recipient=IGSID, **extra):
    return {"recipient": {"id": recipient}, "message": {"text": text}, **extra}


async def sent(client) -> list[dict]:
    return (await client.get("/_sandbox/sent")).json()["data"]


def assert_error(response, status, code, subcode=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error.get("error_subcode") == subcode
    assert error["type"] in ("OAuthException", "GraphMethodException")
    assert error["message"] and error["fbtrace_id"]
    return error


def bound_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serving(app, sock: socket.socket | None = None):
    """Serve an ASGI app on a real local port; yields its base URL."""
    sock = sock or bound_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


class Receiver:
    """A real HTTP server standing in for dmrelay's webhook endpoint."""

    def __init__(self):
        self.requests: list[tuple[dict, bytes]] = []
        self.arrivals: list[datetime] = []  # when each of them came (wall clock, as the sandbox)
        self.status = 200
        self.delay = 0.0
        self.gate: asyncio.Event | None = None  # if set: answer only once it is open
        self.app = Starlette(routes=[Route("/webhook", self.receive, methods=["POST"])])
        self.socket = bound_socket()
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}/webhook"

    async def receive(self, request: Request) -> Response:
        arrived = datetime.now(UTC)
        self.requests.append((dict(request.headers), await request.body()))
        self.arrivals.append(arrived)
        await asyncio.sleep(self.delay)
        if self.gate is not None:
            await self.gate.wait()
        return Response(status_code=self.status)

    def payloads(self) -> list[dict]:
        return [assert_signed(headers, body) for headers, body in self.requests]


def assert_signed(headers: dict, body: bytes) -> dict:
    assert headers["content-type"] == "application/json"
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-hub-signature-256"] == expected
    return json.loads(body)
