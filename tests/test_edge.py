"""The edge (app/core/edge.py): body caps and unreadable request targets, for both lanes."""

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Literal, get_args, get_origin
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.core import schemas
from app.core.errors import error_response
from app.inbound.signature import signature_of

CHUNK = 64 * 1024


class Sender:
    """A request body sent in chunks, up to `total` bytes, counting what was sent."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            self.sent += CHUNK
            yield b"x" * CHUNK


async def _raw_request(api_url: str, head: str, body: bytes = b"") -> tuple[int, dict, bytes]:
    """Send a request's head (and maybe part of its body), then read the answer without
    sending anything more: an answer proves the server did not wait for the rest."""
    address = urlsplit(api_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        status_line = await reader.readline()
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        content = await reader.readexactly(int(headers["content-length"]))
    finally:
        writer.close()
    return int(status_line.split()[1]), headers, content


def _head(path: str, headers: dict[str, str]) -> str:
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{lines}\r\n"


def _cases(account) -> list[tuple[str, dict[str, str], str]]:
    return [
        # The express lane's route, signed in.
        ("/api/chats/x/messages", {"Authorization": f"Bearer {account.token}"}, "max_body_bytes"),
        # The FastAPI lane (a query string), with a key nobody issued.
        (
            "/api/chats/x/messages?profile_group_id=x",
            {"Authorization": "Bearer dmr_wrong"},
            "max_body_bytes",
        ),
        # Meta's webhook, without a valid signature.
        ("/webhooks/instagram", {"X-Hub-Signature-256": "sha256=00"}, "webhook_max_body_bytes"),
    ]


def _too_large(limit: int) -> dict:
    return {
        "error": f"The request body is too large: this endpoint accepts at most {limit} bytes",
        "errors": [],
    }


async def test_a_content_length_over_the_cap_is_refused_before_the_body_is_sent(account, clean):
    for path, headers, setting in _cases(account):
        limit = getattr(clean.settings, setting)
        head = _head(path, {**headers, "Content-Length": str(limit + 1)})
        # Not a byte of the body is sent: the answer cannot have waited for it.
        status, response_headers, content = await _raw_request(clean.api_url, head)
        assert (status, json.loads(content)) == (413, _too_large(limit)), path
        assert response_headers["x-request-id"]


async def test_a_chunked_body_is_refused_once_past_the_cap_before_it_ends(account, clean):
    for path, headers, setting in _cases(account):
        limit = getattr(clean.settings, setting)
        head = _head(path, {**headers, "Transfer-Encoding": "chunked"})
        # One chunk past the cap, and the body's end never sent: the answer comes while the
        # server would still be waiting for more, had it gone on reading.
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (CHUNK, b"x" * CHUNK) for _ in range(limit // CHUNK + 1)
        )
        status, _, content = await _raw_request(clean.api_url, head, chunks)
        assert (status, json.loads(content)) == (413, _too_large(limit)), path


async def test_a_streamed_body_over_the_cap_is_413_through_httpx(account, clean):
    for path, headers, setting in _cases(account):
        limit = getattr(clean.settings, setting)
        body = Sender(total=2 * limit)
        async with httpx.AsyncClient(base_url=clean.api_url) as http:
            response = await http.post(
                path, content=body, headers={**headers, "Content-Type": "application/json"}
            )
        assert (response.status_code, response.json()) == (413, _too_large(limit)), path
        assert response.headers["x-request-id"]


async def test_each_path_has_its_own_cap(account, clean):
    # Over the webhook's cap but under the API's: only the webhook refuses it for its size.
    size = clean.settings.webhook_max_body_bytes + 1
    assert size <= clean.settings.max_body_bytes
    body = json.dumps({"body": "x" * (size - 12)}).encode()
    async with httpx.AsyncClient(base_url=clean.api_url) as http:
        webhook = await http.post(
            "/webhooks/instagram",
            content=body,
            headers={"X-Hub-Signature-256": signature_of(clean.settings.meta_app_secret, body)},
        )
        api = await http.post(
            "/api/chats/x/messages",
            content=body,
            headers={
                "Authorization": f"Bearer {account.token}",
                "Content-Type": "application/json",
            },
        )
    assert webhook.status_code == 413
    assert api.status_code == 422  # read, and refused for what it says


# The middleware alone, with a counting receive: it reads no further than the cap.


class CountingReceive:
    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.calls = 0

    async def __call__(self) -> dict:
        self.calls += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": self.calls < self.chunks}


async def _read_all(scope, receive, send) -> None:
    # Like the express lane: the whole body, then an answer.
    while (await receive()).get("more_body"):
        pass
    await error_response(200, "read")(scope, receive, send)


def _scope(path: str = "/api/x", headers: list | None = None) -> dict:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"",
        "headers": headers or [],
    }


async def _call(guard, scope: dict, receive) -> list[dict]:
    sent = []

    async def send(message: dict) -> None:
        sent.append(message)

    await guard(scope, receive, send)
    return sent


async def test_the_guard_stops_reading_at_the_cap():
    from app.core.edge import BodyCaps, EdgeGuard

    guard = EdgeGuard(_read_all, BodyCaps(10_000, {"/hook": 3_000}))
    receive = CountingReceive(chunks=1_000_000)
    sent = await _call(guard, _scope(), receive)
    assert sent[0]["status"] == 413
    assert receive.calls == 11  # 11,000 bytes: one chunk past the cap, and no more
    assert len(sent) == 2  # the app's own answer to the exception is not sent after ours

    receive = CountingReceive(chunks=1_000_000)
    assert (await _call(guard, _scope("/hook"), receive))[0]["status"] == 413
    assert receive.calls == 4

    receive = CountingReceive(chunks=10)  # exactly the cap
    assert (await _call(guard, _scope(), receive))[0]["status"] == 200


async def test_the_guard_refuses_a_content_length_over_the_cap_without_reading():
    from app.core.edge import BodyCaps, EdgeGuard

    guard = EdgeGuard(_read_all, BodyCaps(10_000))
    receive = CountingReceive(chunks=1)
    sent = await _call(guard, _scope(headers=[(b"content-length", b"10001")]), receive)
    assert sent[0]["status"] == 413
    assert receive.calls == 0


# Input that reached PostgreSQL, the filesystem or hmac and failed there (a 500): refused at
# the edge, in the one place for each kind of input, by either lane.

SURROGATE = "\ud800"


def _json(value: dict) -> bytes:
    # json.dumps writes a lone surrogate as the escape "\ud800", as a client's JSON would.
    return json.dumps(value).encode()


EDGE_CASES = [
    # (name, method, path, query, body, extra headers, status, words in the error)
    (
        "surrogate in media",
        "POST",
        "/api/chats/{chat}/messages",
        {},
        _json({"media": [f"https://a.example/{SURROGATE}.png"]}),
        {},
        422,
        "media.0: may not contain a lone surrogate",
    ),
    (
        "surrogate in reply_to_external_id",
        "POST",
        "/api/chats/{chat}/messages",
        {},
        _json({"body": "hi", "reply_to_external_id": f"aWdf{SURROGATE}"}),
        {},
        422,
        "reply_to_external_id: may not contain a lone surrogate",
    ),
    (
        "surrogate in body",
        "POST",
        "/api/chats/{chat}/messages",
        {},
        _json({"body": f"a{SURROGATE}b"}),
        {},
        422,
        "body: may not contain a lone surrogate",
    ),
    (
        "surrogate in participant_username",
        "POST",
        "/api/profiles/{profile}/chats",
        {},
        _json({"participant_external_id": "77", "participant_username": SURROGATE}),
        {},
        422,
        "participant_username: may not contain a lone surrogate",
    ),
    (
        "surrogate in participant_name",
        "POST",
        "/api/profiles/{profile}/chats",
        {},
        _json({"participant_external_id": "77", "participant_name": f"Ann {SURROGATE}"}),
        {},
        422,
        "participant_name: may not contain a lone surrogate",
    ),
    (
        "NUL in a chat id",
        "GET",
        "/api/chats/a%00b",
        {},
        None,
        {},
        404,
        "Not found: the request path may not contain the NUL character (U+0000)",
    ),
    (
        "NUL in a chat id, sending",
        "POST",
        "/api/chats/a%00b/messages",
        {},
        _json({"body": "hi"}),
        {},
        404,
        "Not found: the request path may not contain the NUL character (U+0000)",
    ),
    (
        "NUL in a message id",
        "GET",
        "/api/messages/a%00b",
        {},
        None,
        {},
        404,
        "Not found: the request path may not contain the NUL character (U+0000)",
    ),
    (
        "NUL in media",
        "GET",
        "/media/%00",
        {},
        None,
        {},
        404,
        "Not found: the request path may not contain the NUL character (U+0000)",
    ),
    (
        "media key too long for the filesystem",
        "GET",
        "/media/" + "a" * 5_000,
        {},
        None,
        {},
        404,
        "Media not found",
    ),
    (
        "NUL in a query value",
        "GET",
        "/api/profiles/{profile}/chats",
        {"profile_group_id": "a\x00b"},
        None,
        {},
        422,
        "Invalid request: profile_group_id may not contain the NUL character (U+0000)",
    ),
    (
        "message list page past a bigint offset",
        "GET",
        "/api/chats/{chat}/messages",
        {"page": "461168601842738791"},
        None,
        {},
        422,
        "page: Input should be less than or equal to 92233720368547758",
    ),
    (
        "chat list page past a bigint offset",
        "GET",
        "/api/profiles/{profile}/chats",
        {"page": "9223372036854775808", "per_page": "1"},
        None,
        {},
        422,
        "page: Input should be less than or equal to 92233720368547758",
    ),
    (
        "before year 0 in UTC",
        "GET",
        "/api/profiles/{profile}/chats",
        {"before": "0001-01-01T00:00:00+14:00"},
        None,
        {},
        422,
        "before: is out of range",
    ),
    (
        "after year 10000 in UTC",
        "GET",
        "/api/profiles/{profile}/chats",
        {"after": "9999-12-31T23:59:59-14:00"},
        None,
        {},
        422,
        "after: is out of range",
    ),
    (
        "non-ASCII signature",
        "POST",
        "/webhooks/instagram",
        {},
        b'{"object":"instagram","entry":[]}',
        {"X-Hub-Signature-256": "sha256=é".encode()},
        401,
        "Missing or invalid X-Hub-Signature-256 signature",
    ),
    (
        "Latin-1 signature",
        "POST",
        "/webhooks/instagram",
        {},
        b'{"object":"instagram","entry":[]}',
        {"X-Hub-Signature-256": "sha256=\xff".encode("latin-1")},
        401,
        "Missing or invalid X-Hub-Signature-256 signature",
    ),
]


async def _stored(stack) -> tuple[int, ...]:
    from tests.inbound import scalar

    return tuple(
        [
            await scalar(stack, f"SELECT count(*) FROM {table}")
            for table in ("chats", "messages", "webhook_deliveries", "idempotency_keys")
        ]
    )


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "headers", "status", "complaint"),
    [case[1:] for case in EDGE_CASES],
    ids=[case[0] for case in EDGE_CASES],
)
async def test_unstorable_input_is_a_clear_4xx_in_both_lanes(
    account, clean, method, path, query, body, headers, status, complaint
):
    chat = await account.client.chats.create(account.profile_id, "1602510301006188")
    path = path.format(chat=chat.id, profile=account.profile_id)
    before = await _stored(clean)
    answers = []
    async with httpx.AsyncClient(base_url=clean.api_url) as http:
        # Without a query string a send or a webhook takes the express lane; with one (an
        # unknown parameter is ignored), the FastAPI route. Both must answer alike.
        for lane in ({}, {"lane": "fastapi"}) if not query else (query,):
            response = await http.request(
                method,
                path,
                params=lane,
                content=body,
                headers={
                    "Authorization": f"Bearer {account.token}",
                    "Content-Type": "application/json",
                    **headers,
                },
            )
            answers.append((response.status_code, response.json()))
    assert answers[0][0] == status, answers
    assert complaint in answers[0][1]["error"]
    assert all(answer == answers[0] for answer in answers)
    assert await _stored(clean) == before


# Canonical sqids of (kind, a number past a bigint), per kind: ids nobody issued.
PAST_BIGINT = {"chat": "4zC5cKVPoqkpBP", "message": "48CvbPyjZPGEVp", "profile": "1YaKPTYJox6UYP"}


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("GET", "/api/chats/{id}", "chat"),
        ("GET", "/api/chats/{id}/messages", "chat"),
        ("POST", "/api/chats/{id}/messages", "chat"),
        ("GET", "/api/messages/{id}", "message"),
        ("POST", "/api/messages/{id}/retry", "message"),
        ("GET", "/api/profiles/{id}", "profile"),
    ],
)
async def test_an_id_longer_than_any_issued_or_meta_gives_is_404(
    account, clean, method, path, kind
):
    async with httpx.AsyncClient(base_url=clean.api_url) as http:
        for odd_id in (PAST_BIGINT[kind], "a" * 15_000, "é" * 100, "a~b"):
            response = await http.request(
                method,
                path.format(id=odd_id),
                json={"body": "hi"} if method == "POST" else None,
                headers={"Authorization": f"Bearer {account.token}"},
            )
            assert response.status_code == 404, response.text
            assert response.json()["error"].endswith("not found")
    assert await _stored(clean) == (0, 0, 0, 0)


def _string_leaves(annotation: object, metadata: tuple = ()) -> Iterator[tuple]:
    """The metadata of every str a request body may hold, anywhere in its model."""
    if get_origin(annotation) is Annotated:
        base, *more = get_args(annotation)
        yield from _string_leaves(base, (*metadata, *more))
    elif annotation is str:
        yield metadata
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for field in annotation.model_fields.values():
            yield from _string_leaves(field.annotation, tuple(field.metadata))
    elif get_origin(annotation) is not Literal:  # a Literal allows its own values only
        for argument in get_args(annotation):
            yield from _string_leaves(argument)


def _routes(routes) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (included := getattr(route, "original_router", None)) is not None:
            yield from _routes(included.routes)


def test_every_string_in_a_request_body_is_checked_as_storable_text():
    from app.main import create_app

    bodies = [
        param.field_info.annotation
        for route in _routes(create_app().routes)
        for param in route.dependant.body_params
    ]
    assert bodies  # the walk found the request models
    for model in bodies:
        for metadata in _string_leaves(model):
            assert any(getattr(m, "func", None) is schemas._storable for m in metadata), model


async def test_the_last_page_allowed_is_empty_not_an_error(account, clean):
    # page × per_page at its bound still fits a bigint: past the rows, so empty.
    from app.core.pagination import MAX_PAGE, MAX_PER_PAGE

    chat = await account.client.chats.create(account.profile_id, "1602510301006188")
    await account.client.messages.send(chat.id, body="hi")
    for lister in (account.client.chats.list, account.client.messages.list):
        owner = account.profile_id if lister == account.client.chats.list else chat.id
        page = await lister(owner, page=MAX_PAGE, per_page=MAX_PER_PAGE)
        assert (page.data, page.total, page.page) == ([], 1, MAX_PAGE)


async def test_multipart_sends_have_the_upload_cap_and_json_keeps_the_small_one():
    import re

    from app.core.edge import BodyCaps, EdgeGuard

    sends = re.compile(r"/api/chats/[^/]+/messages")
    guard = EdgeGuard(_read_all, BodyCaps(10_000, upload_limits=[(sends, 30_000)]))
    multipart = [(b"content-type", b"multipart/form-data; boundary=x")]
    json_type = [(b"content-type", b"application/json")]
    path = "/api/chats/abc/messages"
    # 20,000 bytes: over the JSON cap, under the upload cap.
    assert (await _call(guard, _scope(path, multipart), CountingReceive(20)))[0]["status"] == 200
    assert (await _call(guard, _scope(path, json_type), CountingReceive(20)))[0]["status"] == 413
    other = _scope("/api/chats/abc", multipart)
    assert (await _call(guard, other, CountingReceive(20)))[0]["status"] == 413
    receive = CountingReceive(chunks=1_000_000)
    assert (await _call(guard, _scope(path, multipart), receive))[0]["status"] == 413
    assert receive.calls == 31
