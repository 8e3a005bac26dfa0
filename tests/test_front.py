"""The express front (app/core/front.py) serves the lane's plain requests before every
middleware, doing what they would do: the request id, the edge's caps, the count, histogram
and access line, a 500 or 503 for an exception. What it does not serve, or its handler passes
on, reaches the full app as if there were no front. (tests/test_express.py compares the
served answers with FastAPI's; these check the front's own decisions, on a stub route.)"""

import json
import logging
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from starlette.datastructures import State

from app.core import tracing
from app.core.edge import BodyCaps
from app.core.express import PASSED_KEY, Answer, ExpressRequest, Lane, Route
from app.core.front import ExpressFront
from app.core.metrics import HTTP_REQUESTS, STARTED_KEY, UNMATCHED
from app.core.request_id import REQUEST_ID_KEY

TEMPLATE = "/front-test/{thing_id}"
BODY = b'{"text": "hello"}'


def _scope(headers: list[tuple[bytes, bytes]] | None = None, path: str = "/front-test/abc"):
    given = [(b"content-length", str(len(BODY)).encode())] if headers is None else headers
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), *given],
    }


class FullApp:
    """The stand-in for FastAPI and its middlewares: records what reached it."""

    def __init__(self) -> None:
        self.state = State()
        self.reached: list[tuple[dict[str, Any], bytes]] = []

    async def full(self, scope, receive, send) -> None:
        message = await receive()
        self.reached.append((scope, message.get("body", b"")))
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _front(handler: Callable[[ExpressRequest], Any]) -> tuple[ExpressFront, Counter[Route]]:
    route = Route("POST", re.compile(r"/front-test/([^/]+)"), handler, TEMPLATE)
    answered: Counter[Route] = Counter()
    return ExpressFront(Lane([route], answered), BodyCaps(1_000)), answered


async def _serve(front: ExpressFront, scope: dict[str, Any], app: FullApp):
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    served = await front.serve(scope, receive, send, app)  # type: ignore[arg-type]
    return served, sent


def _count(status: int) -> float:
    return HTTP_REQUESTS.labels(TEMPLATE, "POST", str(status))._value.get()


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "dmrelay.access"]


async def test_an_answer_carries_its_request_id_and_is_counted_and_logged(caplog):
    async def answer(request: ExpressRequest) -> Answer:
        assert request.match[1] == "abc" and request.body == BODY
        return Answer(202, b'{"ok":true}')

    front, answered = _front(answer)
    before = _count(202)
    caplog.set_level(logging.INFO)
    scope = _scope([(b"content-length", b"17"), (b"x-request-id", b"given-id")])
    served, sent = await _serve(front, scope, FullApp())
    assert served and sum(answered.values()) == 1
    assert sent[0]["status"] == 202
    assert sent[0]["headers"] == [
        (b"content-type", b"application/json"),
        (b"content-length", b"11"),
        (b"x-request-id", b"given-id"),
    ]
    assert sent[1]["body"] == b'{"ok":true}'
    assert _count(202) == before + 1
    (line,) = _access_lines(caplog)
    assert (line.method, line.route, line.status) == ("POST", TEMPLATE, 202)
    assert line.getMessage() == f"POST {TEMPLATE} 202" and line.duration_ms >= 0


async def test_a_request_passed_on_reaches_the_full_app_once_with_its_id_and_start(caplog):
    async def pass_on(request: ExpressRequest) -> None:
        logging.getLogger("front-test").warning("passing on")
        return None

    front, answered = _front(pass_on)
    caplog.set_level(logging.INFO)
    app = FullApp()
    served, sent = await _serve(front, _scope(), app)
    assert served and not answered and sent[0]["status"] == 418
    ((scope, body),) = app.reached
    assert body == BODY  # replayed
    assert scope[PASSED_KEY] and STARTED_KEY in scope
    # The full app's request id middleware gives the same id the handler's lines carried.
    assert re.fullmatch(r"[0-9a-f]{32}", scope[REQUEST_ID_KEY])
    assert not _access_lines(caplog)  # the full app's HttpMetrics counts and logs it
    # Behind the front, the lane does not try it again.
    assert front.lane.find(scope) is None


async def test_an_exception_is_a_500_with_the_request_id_counted_as_unmatched(caplog):
    async def fail(request: ExpressRequest) -> None:
        raise ValueError("a bug")

    front, _ = _front(fail)
    before = HTTP_REQUESTS.labels(UNMATCHED, "POST", "500")._value.get()
    caplog.set_level(logging.INFO)
    served, sent = await _serve(front, _scope(), FullApp())
    assert served and sent[0]["status"] == 500
    request_id = dict(sent[0]["headers"])[b"x-request-id"].decode()
    assert request_id in json.loads(sent[1]["body"])["error"]
    assert HTTP_REQUESTS.labels(UNMATCHED, "POST", "500")._value.get() == before + 1
    assert any(r.exc_info and request_id in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "scope",
    [
        _scope([]),  # no Content-Length: the edge counts the body as it is read
        _scope([(b"content-length", b"1001")]),  # past the cap: the edge refuses it
        _scope(path="/front-test/a\x00b"),  # a target the edge refuses
        {**_scope(), "query_string": b"x=1"},  # a query string: FastAPI's route reads it
        {**_scope(), "method": "GET"},
    ],
    ids=["chunked", "too large", "nul", "query", "other method"],
)
async def test_what_the_edge_or_route_must_decide_is_left_to_the_full_app(scope):
    async def never(request: ExpressRequest) -> None:
        raise AssertionError("the handler ran")

    front, _ = _front(never)
    served, sent = await _serve(front, scope, FullApp())
    assert not served and not sent


async def test_while_tracing_is_on_the_middlewares_serve_it(monkeypatch):
    async def never(request: ExpressRequest) -> None:
        raise AssertionError("the handler ran")

    monkeypatch.setattr(tracing, "tracer", object())
    front, _ = _front(never)
    served, sent = await _serve(front, _scope(), FullApp())
    assert not served and not sent
