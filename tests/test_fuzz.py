"""Every route, walked with hostile values: nothing a client sends may cause a 5xx.

Two walks, both bounded and deterministic (a fixed number of cases, no random seed), against
the real stack:
- schemathesis generates requests from the API's own OpenAPI document, in its positive mode
  (values the schema allows) and its negative mode (values it forbids), for every operation,
  and checks every answer against the document: its status, media type, body and headers, and
  that nothing the document forbids was accepted (CHECKS);
- a table of hostile values (NUL, lone surrogates, huge numbers, very long strings, odd
  encodings and headers) is put, one at a time, in every parameter, body field and header of
  every route, the routes the schema leaves out too.
A valid API key and real profile, chat and message ids are mixed in, so that requests get past
authentication and the 404s into the code behind them."""

import asyncio
import hashlib
import hmac
import json
import re
from contextlib import suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import text

from tests.conftest import wait_for

CUSTOMER = "1602510301006188"
# No 5xx, and every answer as the document says: its status, media type, body and headers.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    # Nothing the document forbids is accepted.
    negative_data_rejection,
]
# Cases per operation and generation mode: enough to reach every parameter's edges, few
# enough that the walk takes seconds (a negative case costs far more to generate).
EXAMPLES = {GenerationMode.POSITIVE: 15, GenerationMode.NEGATIVE: 5}


@dataclass
class Target:
    api_url: str
    token: str
    ids: dict[str, str]


async def _target(account, clean) -> Target:
    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    message = await account.client.messages.send(chat.id, body="hello")
    webhook = await account.client.webhooks.create(
        BASELINES["WebhookCreate"]["url"], BASELINES["WebhookCreate"]["events"]
    )
    ids = {
        "profile_id": account.profile_id,
        "chat_id": chat.id,
        "message_id": message.id,
        "user_id": CUSTOMER,
        "webhook_id": webhook.id,
    }
    return Target(clean.api_url, account.token, ids)


def _schemathesis_walk(spec: dict[str, Any], target: Target) -> list[str]:
    """Runs in a thread: schemathesis calls with requests, synchronously, and the API is
    served by the test's event loop."""
    schema = schemathesis.openapi.from_dict(spec)
    session = requests.Session()
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in EXAMPLES:
            cases = st.tuples(
                operation.as_strategy(generation_mode=mode), st.booleans(), st.just(mode)
            )

            @settings(
                max_examples=EXAMPLES[mode],
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(cases)
            def walk(drawn: tuple[schemathesis.Case, bool, GenerationMode]) -> None:
                case, real_ids, drawn_mode = drawn
                checks = CHECKS
                if real_ids:
                    for name in case.path_parameters or {}:
                        if name in target.ids:
                            case.path_parameters[name] = target.ids[name]
                    if drawn_mode is GenerationMode.NEGATIVE:
                        # A real id may have replaced the one value that broke the schema,
                        # leaving a request that is not invalid (an extra query parameter
                        # alone is one no API refuses): not a negative case any more.
                        checks = tuple(c for c in CHECKS if c is not negative_data_rejection)
                headers = {"Authorization": f"Bearer {target.token}"}
                # The key is the case's own (schemathesis then judges the request sent, not
                # one without it), and parameters the operation does not define are left
                # out: every API ignores an unknown query parameter, so a case whose only
                # fault is one is not a negative case.
                case.headers = {**(case.headers or {}), **headers}
                if case.query:
                    known = {p.name for p in case.operation.query}
                    case.query = {k: v for k, v in case.query.items() if k in known}
                response = case.call(
                    base_url=target.api_url, session=session, headers=headers, timeout=30
                )
                try:
                    case.validate_response(response, checks=checks, headers=headers)
                except (FailureGroup, AssertionError) as failed:
                    failures.append(
                        f"{response.status_code} {case.as_curl_command(headers=headers)}\n"
                        f"  -> {response.text[:300]}\n  {failed}"
                    )

            # Unsatisfiable: nothing to generate in this mode (say, no parameter to break).
            with suppress(Unsatisfiable):
                walk()
    return failures


async def _settled(clean) -> None:
    """Wait for the work the walk left (messages to deliver, webhooks to apply), so that it
    does not run on into the next test."""

    async def settled() -> bool:
        async with clean.sessionmaker() as session:
            return not await session.scalar(
                text(
                    "SELECT EXISTS (SELECT FROM messages WHERE status IN "
                    "('pending', 'failed_waiting_for_retry')) OR EXISTS (SELECT FROM "
                    "webhook_deliveries WHERE status = 'received')"
                )
            )

    async def worker_idle() -> bool:
        return all(task.done() for task in clean.worker.tasks.values())

    await wait_for(settled, timeout=60)
    await wait_for(worker_idle, timeout=60)


async def test_schemathesis_finds_no_server_error_and_every_answer_matches_the_spec(account, clean):
    target = await _target(account, clean)
    async with httpx.AsyncClient(base_url=target.api_url) as http:
        spec = (await http.get("/openapi.json")).json()
    failures = await asyncio.to_thread(_schemathesis_walk, spec, target)
    await _settled(clean)
    assert not failures, "\n".join(failures)


# The table walk. Strings go into query and path parameters percent-encoded from UTF-8 (a lone
# surrogate as the invalid bytes it would be), into JSON bodies as JSON, into headers as bytes.
HOSTILE_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\u202e\ufeff",
    "💥" * 300,
    "x" * 8000,
    "../../etc/passwd",
    "%00",
    "%ff",
    "null",
    "-1",
    "0",
    "1e400",
    "9" * 400,
    "0x10",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59",
    "<script>alert(1)</script>",
    "' OR '1'='1",
]
HOSTILE_JSON: list[Any] = [
    *HOSTILE_TEXT,
    "y" * 70_000,
    None,
    True,
    -1,
    0,
    2**63,
    -(2**63) - 1,
    10**400,
    1.5e308,
    [],
    {},
    [[[[[]]]]],
    ["\x00"],
    ["\ud800"],
    {"\x00": "\x00"},
]
HOSTILE_BODIES = [
    b"",
    b"{",
    b"\xff\xfe",
    b"[" * 5000,
    b'{"a":' * 3000,
    b"null",
    b"[]",
    b'"x"',
    b"1e999",
    b"NaN",
    b'{"body": NaN}',
    b'{"body": "\\u0000"}',
    b"\x00",
    b'{"body": "x"}' * 100,
    '{"body": "caf\u00e9"}'.encode("latin-1"),
    '{"body": "hi"}'.encode("utf-16"),
]
# (A value cannot start or end with white space, nor hold a control character: no HTTP client
# or server lets it through.)
HOSTILE_HEADERS = [
    b"",
    b"\xff\xfe",
    b"caf\xe9",
    "💥".encode(),
    b"x" * 8000,
    b"Bearer",
    b"Bearer \xe9t\xe9",
    b"Bearer \xff",
    b"Bearer " + b"x" * 8000,
    b"sha256=" + b"0" * 64,
    b"application/json; charset=utf-16",
    b"multipart/form-data; boundary=x",
]
HEADERS = [
    "Authorization",
    "Idempotency-Key",
    "X-Request-Id",
    "Content-Type",
    "X-Hub-Signature-256",
]
# Every /api route takes it, through the same dependency: walked on one route.
SHARED_QUERY = "profile_group_id"
# Routes the OpenAPI document leaves out.
UNDOCUMENTED = [("GET", "/healthz")]


def _encode(value: str) -> str:
    return quote(value, safe="", errors="surrogatepass")


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    path_names: tuple[str, ...]
    query_names: tuple[str, ...]
    body_fields: tuple[str, ...]  # empty: no JSON body
    baseline: dict[str, Any] | None


BASELINES = {
    "ChatCreate": {"participant_external_id": "1"},
    "MessageSend": {"body": "hi"},
    "ReactionIn": {"reaction": "love"},
    "IceBreakersIn": {"ice_breakers": [{"question": "q", "payload": "p"}]},
    "PrivateReplyIn": {"text": "hi"},
    "RecipientMessageSend": {"recipient_id": CUSTOMER, "body": "hi"},
    # Loopback's discard port: nothing listens, nothing leaves the machine.
    "WebhookCreate": {"url": "http://127.0.0.1:9/hook", "events": ["message.received"]},
    "WebhookUpdate": {"description": "fuzzed"},
    "WebhookTest": {"event_type": "message.received"},
    "ProfileGroupCreate": {"profile_group": {"name": "fuzz"}},
    "ApiKeyCreate": {"name": "fuzz", "profile_group_id": "k"},
    "ConnectionInit": {"platform": "instagram"},
    "BackfillChats": {"from": "2026-01-01"},
}


def _routes(spec: dict[str, Any]) -> list[Route]:
    routes = []
    for template, operations in spec["paths"].items():
        for method, operation in operations.items():
            parameters = operation.get("parameters", [])
            body_fields: tuple[str, ...] = ()
            baseline = None
            content = operation.get("requestBody", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema", {})
            # An optional body is `anyOf` its model and null; Meta's webhook body is no model
            # (walked signed, below).
            ref = schema.get("$ref") or next(
                (option["$ref"] for option in schema.get("anyOf", []) if "$ref" in option), None
            )
            if ref is not None:
                name = ref.rsplit("/", 1)[-1]
                body_fields = tuple(spec["components"]["schemas"][name]["properties"])
                baseline = BASELINES[name]
            routes.append(
                Route(
                    method.upper(),
                    template,
                    tuple(p["name"] for p in parameters if p["in"] == "path"),
                    tuple(p["name"] for p in parameters if p["in"] == "query"),
                    body_fields,
                    baseline,
                )
            )
    for method, template in UNDOCUMENTED:
        names = tuple(re.findall(r"{(\w+)}", template))
        routes.append(Route(method, template, names, (), (), None))
    return routes


def _requests(route: Route, target: Target) -> list[dict[str, Any]]:
    """Each request of the table walk for a route: the baseline with one thing made hostile."""
    ids = {name: target.ids.get(name, "k") for name in route.path_names}
    key = {"Authorization": f"Bearer {target.token}"}
    if route.baseline is not None:
        key["Content-Type"] = "application/json"
    body = json.dumps(route.baseline).encode() if route.baseline is not None else b""

    def request(
        path_ids: dict[str, str] = ids,
        query: str = "",
        headers: dict[str, Any] = key,
        content: bytes = body,
    ) -> dict[str, Any]:
        path = route.template.format(**{n: _encode(v) for n, v in path_ids.items()})
        return {
            "method": route.method,
            "url": path + (f"?{query}" if query else ""),
            "headers": headers,
            "content": content,
        }

    made = [request()]
    for name in route.path_names:
        made += [request(path_ids={**ids, name: value}) for value in HOSTILE_TEXT]
    for name in route.query_names:
        if name == SHARED_QUERY and route.template != "/api/profiles":
            continue
        made += [request(query=f"{_encode(name)}={_encode(value)}") for value in HOSTILE_TEXT]
    if route.baseline is not None:
        for field in route.body_fields:
            for value in HOSTILE_JSON:
                fields = {**route.baseline, field: value}
                made.append(request(content=json.dumps(fields).encode()))
        made += [request(content=content) for content in HOSTILE_BODIES]
    return made


def _header_requests(target: Target) -> list[dict[str, Any]]:
    """Every hostile header value in every header that dmrelay reads, on the routes that
    read them (the express lane's too: no query string, a key verified recently)."""
    chat, token = target.ids["chat_id"], target.token
    routes = [
        ("GET", "/api/profiles", b""),
        ("GET", f"/api/chats/{chat}/messages", b""),
        ("POST", f"/api/chats/{chat}/messages", b'{"body": "hi"}'),
        ("POST", "/webhooks/instagram", b'{"object": "instagram", "entry": []}'),
    ]
    made = []
    for method, url, content in routes:
        base = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        for name in HEADERS:
            for value in HOSTILE_HEADERS:
                headers = {**base, name: value}
                made.append({"method": method, "url": url, "headers": headers, "content": content})
    return made


def _signed(secret: str, content: bytes) -> dict[str, Any]:
    """A webhook delivery signed as Meta would: past the signature, into storage."""
    signature = hmac.new(secret.encode(), content, hashlib.sha256).hexdigest()
    return {
        "method": "POST",
        "url": "/webhooks/instagram",
        "headers": {"X-Hub-Signature-256": f"sha256={signature}"},
        "content": content,
    }


# MCP calls (/mcp, JSON-RPC) with hostile arguments: refused as tool errors, never a 5xx.
MCP_BODIES = [
    json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": tool, "arguments": {name: value}},
        }
    ).encode()
    for tool, name in [
        ("dm_chat_get", "chat_id"),
        ("dm_message_send", "body"),
        ("dm_messages_list", "per_page"),
        ("send_dm", "recipient_id"),
    ]
    for value in HOSTILE_JSON
]


def _mcp(target: Target, content: bytes) -> dict[str, Any]:
    headers = {
        "Authorization": f"Bearer {target.token}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    return {"method": "POST", "url": "/mcp", "headers": headers, "content": content}


async def test_hostile_values_cause_no_server_error(account, clean):
    target = await _target(account, clean)
    # A connection each: the server may close one after a request it cannot read, and that
    # must not fail the next request sent on it.
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=target.api_url, timeout=30, limits=fresh) as http:
        spec = (await http.get("/openapi.json")).json()
        made = [r for route in _routes(spec) for r in _requests(route, target)]
        made += _header_requests(target)
        secret = clean.settings.meta_app_secret
        made += [_signed(secret, content) for content in HOSTILE_BODIES]
        made += [_mcp(target, content) for content in [*HOSTILE_BODIES, *MCP_BODIES]]
        made += [
            _signed(secret, json.dumps({"object": "instagram", "entry": value}).encode())
            for value in HOSTILE_JSON
        ]
        gate = asyncio.Semaphore(4)

        async def send(request: dict[str, Any]) -> str | None:
            shown = {k: (v[:200] if isinstance(v, str | bytes) else v) for k, v in request.items()}
            async with gate:
                try:
                    response = await http.request(**request)
                except httpx.TransportError as error:
                    return f"no answer ({error!r}) to {shown}"
            if response.status_code < 500:
                return None
            return f"{response.status_code} {shown}\n  -> {response.text[:300]}"

        failures = [f for f in await asyncio.gather(*map(send, made)) if f is not None]
    await _settled(clean)
    assert len(made) > 800
    assert not failures, f"{len(failures)} server errors:\n" + "\n".join(failures)
