"""The express lane (app/core/express.py) changes nothing a client or the database can see.

Each request below goes, from the same fresh state, once to the stack's API (with the lane)
and once to `plain_api` (the same app without it), and both must give the same status, JSON,
headers, stored rows and queued jobs. The lane's own count of what it answered shows that
its plain cases are still its own, and that the unusual ones reach FastAPI.

No error text is written here: FastAPI's answer is the reference, whatever it says.
"""

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import httpx
import pytest
from sqlalchemy import text, update

from app.api_keys.models import ApiKey
from app.chats.models import Chat
from app.core import ids
from app.core.express import Route
from app.inbound.signature import SIGNATURE_HEADER, signature_of
from app.profiles.models import Profile
from tests.conftest import IG_ACCOUNT_ID, Stack, connect, empty
from tests.inbound import scalar, settled

CUSTOMER = "1602510301006188"
CONVERSATION = "aWdfY29udmVyc2F0aW9uOjE3ODQxNDAwMDAwMDAwMDE"
SEND = "/api/chats/{chat}/messages"
WEBHOOK = "/webhooks/instagram"
# Fixed, so that an answer quoting a time (last_inbound_at) reads the same from both apps.
NOW = datetime.now(UTC)


class Key(StrEnum):
    VALID = "valid"
    MISSING = "missing"
    NOT_BEARER = "not bearer"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    OTHER_GROUP = "other group"


class Secret(StrEnum):
    META = "meta"
    INSTAGRAM = "instagram"
    WRONG = "wrong"
    NONE = "none"


@dataclass(frozen=True)
class Case:
    name: str
    path: str = SEND  # {chat}, {conversation} and {group} are filled in
    json_body: Any = None
    raw_body: bytes | None = None
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    key: Key = Key.VALID
    secret: Secret = Secret.NONE  # how a webhook body is signed
    last_inbound_ago: timedelta | None = None
    profile_status: str = "active"
    # True: the lane must answer it; False: it must reach FastAPI; None: either will do.
    lane: bool | None = None

    def body(self) -> bytes:
        if self.raw_body is not None:
            return self.raw_body
        return json.dumps(self.json_body).encode()


def webhook(name: str, body: bytes, secret: Secret, **options: Any) -> Case:
    return Case(name, WEBHOOK, raw_body=body, secret=secret, key=Key.MISSING, **options)


def _event_body(**message: Any) -> bytes:
    item = {
        "sender": {"id": CUSTOMER},
        "recipient": {"id": IG_ACCOUNT_ID},
        "timestamp": 1_763_000_000_000,
        "message": {"mid": "aWdf_lane_1", "text": "hello", **message},
    }
    return json.dumps(
        {"object": "instagram", "entry": [{"id": IG_ACCOUNT_ID, "messaging": [item]}]}
    ).encode()


CASES = [
    # Sends the lane takes.
    Case("valid send", json_body={"body": "hello"}, lane=True),
    Case("media send", json_body={"media": ["https://cdn.example/a.png"]}, lane=True),
    Case("reply", json_body={"body": "re", "reply_to_external_id": "aWdf_earlier"}, lane=True),
    Case(
        "quick replies",
        json_body={"body": "hi", "quick_replies": [{"title": "a", "payload": "b"}]},
        lane=True,
    ),
    Case(
        "HUMAN_AGENT after 24 hours",
        json_body={"body": "agent here", "tag": "HUMAN_AGENT"},
        last_inbound_ago=timedelta(days=2),
        lane=True,
    ),
    Case("open window", json_body={"body": "in time"}, last_inbound_ago=timedelta(hours=23)),
    Case(
        "Meta's conversation id as chat id",
        SEND.format(chat="{conversation}"),
        json_body={"body": "hello"},
        lane=True,
    ),  # fmt: skip
    Case(
        "JSON with a charset",
        json_body={"body": "hi"},
        content_type="application/json; charset=utf-8",
    ),  # fmt: skip
    Case("non-ASCII text", json_body={"body": "€" * 333 + "x"}),
    # Sends that are refused, or that the lane leaves to FastAPI.
    Case(
        "Idempotency-Key",
        json_body={"body": "once"},
        headers={"Idempotency-Key": "k-1"},
        lane=False,
    ),  # fmt: skip
    Case(
        "query string", SEND + "?profile_group_id={group}", json_body={"body": "hi"}, lane=False
    ),  # fmt: skip
    Case("text too long", json_body={"body": "x" * 1001}),
    Case("too many UTF-8 bytes", json_body={"body": "é" * 501}),
    Case("a large body", json_body={"body": "x" * 200_000}),
    Case("empty text", json_body={"body": ""}),
    Case("whitespace text", json_body={"body": "   "}),
    Case("no fields", json_body={}),
    Case("body and media", json_body={"body": "hi", "media": ["https://cdn.example/a.png"]}),
    Case("two media", json_body={"media": ["https://a.example/1.png", "https://a.example/2.png"]}),
    Case("media not http", json_body={"media": ["ftp://a.example/1.png"]}),
    Case("media of unknown type", json_body={"media": ["https://a.example/file.exe"]}),
    Case("unknown field", json_body={"body": "hi", "colour": "red"}),
    Case("unsupported option", json_body={"body": "hi", "reply_markup": {"a": 1}}),
    Case(
        "quick reply without payload", json_body={"body": "hi", "quick_replies": [{"title": "a"}]}
    ),
    Case("body not a string", json_body={"body": 5}),
    Case("unknown tag", json_body={"body": "hi", "tag": "ACCOUNT_UPDATE"}),
    Case("NUL in text", json_body={"body": "a\x00b"}),
    Case("empty reply_to_external_id", json_body={"body": "hi", "reply_to_external_id": ""}),
    Case("invalid JSON", raw_body=b'{"body": '),
    Case("not UTF-8", raw_body=b'{"body": "\xff"}'),
    Case("JSON array", raw_body=b'["hello"]'),
    Case("JSON null", raw_body=b"null"),
    Case("empty request body", raw_body=b""),
    Case("text/plain", json_body={"body": "hi"}, content_type="text/plain"),
    Case("no content type", json_body={"body": "hi"}, content_type=None),
    Case("missing key", json_body={"body": "hi"}, key=Key.MISSING),
    Case("not a bearer key", json_body={"body": "hi"}, key=Key.NOT_BEARER),
    Case("unknown key", json_body={"body": "hi"}, key=Key.UNKNOWN),
    Case("revoked key", json_body={"body": "hi"}, key=Key.REVOKED),
    Case("key of another profile group", json_body={"body": "hi"}, key=Key.OTHER_GROUP),
    Case("unknown chat", SEND.format(chat="nope"), json_body={"body": "hi"}),
    Case("unknown conversation", SEND.format(chat="aWdfbm9uZQ"), json_body={"body": "hi"}),
    Case("window closed", json_body={"body": "late"}, last_inbound_ago=timedelta(days=2)),
    Case(
        "HUMAN_AGENT after 7 days",
        json_body={"body": "late", "tag": "HUMAN_AGENT"},
        last_inbound_ago=timedelta(days=8),
    ),
    Case("profile expired", json_body={"body": "hi"}, profile_status="expired"),
    # Meta's webhooks.
    webhook("signed webhook", _event_body(), Secret.META, lane=True),
    webhook("signed with the Instagram app secret", _event_body(), Secret.INSTAGRAM, lane=True),
    webhook("bad signature", _event_body(), Secret.WRONG, lane=False),
    webhook("missing signature", _event_body(), Secret.NONE),
    webhook("signed body not JSON", b"<xml>not json</xml>", Secret.META),
    webhook("signed empty body", b"", Secret.META),
    webhook("unsigned empty body", b"", Secret.NONE),
    webhook(
        "signed body with NUL", _event_body(text="a\x00b").replace(b"\\u0000", b"\x00"), Secret.META
    ),  # fmt: skip
    Case(
        "webhook with a query string",
        WEBHOOK + "?via=route",
        raw_body=_event_body(),
        key=Key.MISSING,
        secret=Secret.META,
        lane=False,
    ),  # fmt: skip
]


@dataclass
class Outcome:
    status: int
    headers: dict[str, str]
    body: Any
    rows: dict[str, list[Any]]
    jobs: list[tuple[Any, ...]]


# Headers that differ between any two answers: generated per request or per second.
VARYING_HEADERS = {"date", "server", "x-request-id"}
# Tables a send or a webhook may write; api_keys and profiles only hold the setup.
EFFECT_TABLES = (
    "messages",
    "chats",
    "webhook_deliveries",
    "inbound_events",
    "idempotency_keys",
    "customer_events",
)
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)?")


def _without_times(value: Any) -> Any:
    """A JSON value with every timestamp replaced by a marker: ids repeat from a fresh
    state (RESTART IDENTITY), clock readings do not."""
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    if isinstance(value, str) and _TIMESTAMP.fullmatch(value):
        return "<time>"
    return value


@pytest.fixture
async def quiet(stack: Stack, plain_api: str) -> AsyncIterator[Stack]:
    """The stack, its worker kept from picking jobs, so that they stay queued to compare."""
    try:
        yield stack
    finally:
        await empty(stack)


async def _arrange(stack: Stack, case: Case) -> dict[str, str]:
    """From an empty state, an account, a key and a chat as the case wants them; the values
    its path and headers are filled in with."""
    account = await connect(stack, key_group="other" if case.key == Key.OTHER_GROUP else None)
    await account.client.close()
    profile_id = ids.decode(ids.Kind.PROFILE, account.profile_id)
    async with stack.sessionmaker() as session, session.begin():
        chat = Chat(
            profile_id=profile_id,
            participant_external_id=CUSTOMER,
            external_conversation_id=CONVERSATION,
            last_inbound_at=NOW - case.last_inbound_ago if case.last_inbound_ago else None,
        )
        session.add(chat)
        profile = await session.get(Profile, profile_id)
        profile.status = case.profile_status
        if case.key == Key.REVOKED:
            await session.execute(update(ApiKey).values(revoked_at=NOW))
        await session.flush()
        chat_id, group_id = chat.id, profile.profile_group_id
    return {
        "token": {Key.UNKNOWN: "dmr_not-a-key-at-all"}.get(case.key, account.token),
        "chat": ids.encode(ids.Kind.CHAT, chat_id),
        "conversation": CONVERSATION,
        "group": ids.encode(ids.Kind.PROFILE_GROUP, group_id),
    }


def _headers(case: Case, stack: Stack, values: dict[str, str]) -> dict[str, str]:
    headers = dict(case.headers)
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    if case.key == Key.NOT_BEARER:
        headers["Authorization"] = f"Basic {values['token']}"
    elif case.key != Key.MISSING:
        headers["Authorization"] = f"Bearer {values['token']}"
    secrets = {
        Secret.META: stack.settings.meta_app_secret,
        Secret.INSTAGRAM: stack.settings.instagram_app_secret,
        Secret.WRONG: "not-the-app-secret",
    }
    if case.secret in secrets:
        headers[SIGNATURE_HEADER] = signature_of(secrets[case.secret], case.body())
    return headers


async def _effects(stack: Stack) -> tuple[dict[str, list[Any]], list[tuple[Any, ...]]]:
    rows = {}
    async with stack.sessionmaker() as session:
        for table in EFFECT_TABLES:
            found = await session.scalars(text(f"SELECT to_jsonb(t) FROM {table} t ORDER BY 1"))
            rows[table] = [
                _without_times(json.loads(r) if isinstance(r, str) else r) for r in found
            ]
    jobs = sorted(
        (job.function, job.args, tuple(sorted(job.kwargs.items())), job.job_id)
        for job in await stack.worker.pool.queued_jobs()
        if not job.function.startswith("cron:")
    )
    return rows, jobs


def _lane_count(stack: Stack) -> dict[Route, int]:
    return dict(stack.api.state.express_answered)


async def _run(stack: Stack, api_url: str, case: Case) -> tuple[Outcome, bool]:
    """The case against one API from an empty state: what it answered and stored, and
    whether the express lane answered it."""
    await empty(stack, then_pick_jobs=False)
    values = await _arrange(stack, case)
    async with httpx.AsyncClient(base_url=api_url) as http:
        # The lane only trusts a key verified lately; both APIs get to verify it first.
        await http.get("/api/profiles", headers={"Authorization": f"Bearer {values['token']}"})
        before = _lane_count(stack)
        response = await http.post(
            case.path.format(**values), content=case.body(), headers=_headers(case, stack, values)
        )
        by_lane = _lane_count(stack) != before
    try:
        body = _without_times(response.json())
    except ValueError:
        body = response.text
    headers = {k: v for k, v in response.headers.items() if k not in VARYING_HEADERS}
    rows, jobs = await _effects(stack)
    return Outcome(response.status_code, headers, body, rows, jobs), by_lane


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_the_express_lane_answers_and_stores_as_fastapi_does(quiet, plain_api, case):
    lane, by_lane = await _run(quiet, quiet.api_url, case)
    fastapi, by_plain = await _run(quiet, plain_api, case)
    assert not by_plain
    assert lane.status < 500, lane
    assert (lane.status, lane.body) == (fastapi.status, fastapi.body)
    assert lane.headers == fastapi.headers
    assert lane.rows == fastapi.rows
    assert lane.jobs == fastapi.jobs
    if case.lane is not None:
        served = "the express lane" if by_lane else "FastAPI"
        assert by_lane == case.lane, f"{case.name} was answered by {served}"


async def test_a_webhook_is_stored_alike_by_the_express_lane_and_the_route(account, clean):
    # A query string sends a request on to the FastAPI route; without one, the lane takes it.
    answers = []
    async with httpx.AsyncClient(base_url=clean.api_url) as http:
        for n, query in enumerate(({"via": "route"}, {})):
            item = {
                "sender": {"id": "557"},
                "recipient": {"id": IG_ACCOUNT_ID},
                "timestamp": 1_763_000_000_000 + n,
                "message": {"mid": f"aWdf_express_{n}", "text": f"hello {n}"},
            }
            body = json.dumps(
                {"object": "instagram", "entry": [{"id": IG_ACCOUNT_ID, "messaging": [item]}]}
            )
            response = await http.post(
                "/webhooks/instagram",
                params=query,
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Hub-Signature-256": signature_of(
                        clean.settings.meta_app_secret, body.encode()
                    ),
                },
            )
            answers.append(
                (response.status_code, response.json(), "x-request-id" in response.headers)
            )
    assert answers == [(200, {"received": True}, True)] * 2
    await settled(clean)
    assert (
        await scalar(clean, "SELECT count(*) FROM webhook_deliveries WHERE status = 'processed'")
        == 2
    )
    messages = await account.client.messages.list(
        (await account.client.chats.list(account.profile_id)).data[0].id
    )
    assert sorted(m.body for m in messages.data) == ["hello 0", "hello 1"]
