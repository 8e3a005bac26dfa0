"""The express lane: dmrelay's hottest requests, served in front of FastAPI.

FastAPI's per-request machinery (routing through every route, dependency injection, a
SQLAlchemy session, exit stacks) costs more than accepting a message or a Meta webhook
does: one statement and one Redis call. So a route may register a handler here for its
plain case, built on the same service code as the route. A handler answers, or returns
None to pass the request on, untouched (its body replayed), to FastAPI, which then answers
as it always does: errors, odd cases and the OpenAPI schema stay FastAPI's.

The lane counts, per route, the requests it answered itself: that is how the tests prove
that a route is still served by the lane (tests/test_express.py), and an integer increment
is all it costs.
"""

import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.metrics import ROUTE_KEY


@dataclass(frozen=True)
class ExpressRequest:
    match: re.Match[str]
    headers: dict[bytes, bytes]
    body: bytes
    state: State


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


Handler = Callable[[ExpressRequest], Awaitable[Answer | None]]


# eq=False: a route is itself (hashed by identity, cheaply, as a key of `answered`).
@dataclass(frozen=True, eq=False)
class Route:
    method: str
    path: re.Pattern[str]
    handler: Handler
    # The FastAPI route's path template, for the metrics' route label (app/core/metrics.py):
    # one label for the route, whichever lane answered.
    template: str


# The ASGI scope key the express front (app/core/front.py) marks a request with when its
# handler passed it on: the lane does not try it again behind the front.
PASSED_KEY = "dmrelay.express.passed"


class Lane:
    """The lane's routes, and its count of the requests it answered, per route: shared by the
    front, which serves them before every middleware, and ExpressLane, which serves what the
    front leaves to the middlewares (while tracing is on, a body without a Content-Length)."""

    def __init__(self, routes: list[Route], answered: Counter[Route]) -> None:
        self.routes = routes
        self.answered = answered

    def find(self, scope: Scope) -> tuple[Route, re.Match[str]] | None:
        # A query string (say ?profile_group_id=) is the FastAPI route's to read.
        if scope["type"] == "http" and not scope["query_string"] and PASSED_KEY not in scope:
            for route in self.routes:
                if scope["method"] == route.method and (
                    match := route.path.fullmatch(scope["path"])
                ):
                    return route, match
        return None

    async def attempt(
        self, found: tuple[Route, re.Match[str]], scope: Scope, receive: Receive, state: State
    ) -> tuple[bytes, Answer | None]:
        """The request's body, and the route handler's answer, or None to pass it on."""
        route, match = found
        body = await read_body(receive)
        answer = await route.handler(ExpressRequest(match, dict(scope["headers"]), body, state))
        if answer is not None:
            self.answered[route] += 1
            scope[ROUTE_KEY] = route.template
        return body, answer


def start_message(answer: Answer, *headers: tuple[bytes, bytes]) -> Message:
    """An answer's http.response.start. Framed as FastAPI frames it: a Content-Length, not
    chunked."""
    return {
        "type": "http.response.start",
        "status": answer.status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(answer.body)),
            *headers,
        ],
    }


class ExpressLane:
    def __init__(self, app: ASGIApp, lane: Lane) -> None:
        self.app = app
        self.lane = lane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.lane.find(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        body, answer = await self.lane.attempt(found, scope, receive, scope["app"].state)
        if answer is None:
            await self.app(scope, replay(body, receive), send)
            return
        await send(start_message(answer))
        await send({"type": "http.response.body", "body": answer.body})


async def read_body(receive: Receive) -> bytes:
    """An ASGI request's whole body (the lane's, /mcp's, the bench's and tests' receivers').
    Unbounded here: in the API, the edge in front (app/core/edge.py) refuses a body past its
    path's cap, before a handler authenticates."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the already-read body over again, then listens as before."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
