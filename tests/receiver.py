"""A customer's webhook endpoint for the tests: a real HTTP server on loopback that records
every POST and answers as a test tells it (a status per request, a delay)."""

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from postproxy.webhooks import parse_event_typed, verify_signature

from app.core.express import read_body


@dataclass
class Request:
    name: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)


class Receiver:
    """Endpoints at /<name>: each answers the statuses queued for it in turn, then 200."""

    def __init__(self) -> None:
        self.port = 0
        self.requests: list[Request] = []
        self.statuses: dict[str, list[int]] = defaultdict(list)
        self.delays: dict[str, float] = {}
        self.always: dict[str, int] = {}

    def reset(self) -> None:
        self.requests.clear()
        self.statuses.clear()
        self.delays.clear()
        self.always.clear()

    def url(self, name: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{name}"

    def of(self, name: str) -> list[Request]:
        return [r for r in self.requests if r.name == name]

    def events(self, name: str, secret: str) -> list[tuple[Any, Any]]:
        """The envelopes and typed data the endpoint received, each signature checked with
        the SDK, each body parsed by it."""
        parsed = []
        for request in self.of(name):
            payload = request.body.decode()
            assert verify_signature(payload, request.headers["x-postproxy-signature"], secret)
            envelope, data = parse_event_typed(payload)
            assert request.headers["x-postproxy-event"] == envelope.type
            assert request.headers["user-agent"].startswith("dmrelay")
            assert request.headers["x-postproxy-delivery"]
            parsed.append((envelope, data))
        return parsed

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        name = scope["path"].strip("/")
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append(Request(name, headers, body))
        if name in self.delays:
            await asyncio.sleep(self.delays[name])
        queued = self.statuses.get(name)
        status = queued.pop(0) if queued else self.always.get(name, 200)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": f"answer {status}".encode()})
