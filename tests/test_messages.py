"""Sending: validation, the 24-hour window, delivery through the worker to the sandbox."""

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import get_args

import httpx
import pytest
from alembic import command
from postproxy import NotFoundError, ValidationError
from sqlalchemy import delete, func, select, update

from app.api_keys.auth import Scope
from app.chats.models import Chat
from app.core.db import session_scope
from app.core.migrate import alembic_config
from app.messages import service
from app.messages.models import Direction, Message, MessageStatus
from app.messages.schemas import DirectionName, MessageSend, StatusName
from tests.conftest import _worker_idle, wait_for
from tests.inbound import scalar

CUSTOMER = "1602510301006188"


async def _chat(account, last_inbound_at=None, clean=None):
    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    if last_inbound_at is not None:
        async with clean.sessionmaker() as session, session.begin():
            await session.execute(update(Chat).values(last_inbound_at=last_inbound_at))
    return chat


async def _settled(client, message_id):
    async def settled():
        message = await client.messages.get(message_id)
        return message if message.status not in {"pending", "failed_waiting_for_retry"} else None

    return await wait_for(settled)


async def test_send_is_accepted_at_once_then_published_by_the_worker(account, clean):
    chat = await _chat(account)
    accepted = await account.client.messages.send(chat.id, body="Hello from dmrelay ✓")
    assert accepted.status == "pending"
    assert accepted.direction == "outbound"
    assert accepted.chat_id == chat.id

    published = await _settled(account.client, accepted.id)
    assert published.status == "published"
    assert published.external_id.startswith("aWdf")
    assert published.external_posted_at is not None

    sent = (await clean.sandbox("GET", "/_sandbox/sent")).json()["data"]
    assert [(s["recipient_id"], s["account_id"], s["message"]) for s in sent] == [
        (CUSTOMER, account.platform_id, {"text": "Hello from dmrelay ✓"})
    ]
    assert sent[0]["message_id"] == published.external_id
    # Meta's id works wherever ours does.
    assert (await account.client.messages.get(published.external_id)).id == accepted.id
    chat = await account.client.chats.get(chat.id)
    assert chat.last_outbound_at == published.external_posted_at


async def test_media_send_carries_one_attachment(account, clean):
    chat = await _chat(account)
    message = await account.client.messages.send(chat.id, media=["https://cdn.example/a.png"])
    assert (await _settled(account.client, message.id)).status == "published"
    # Uploaded once for reuse (Attachment Upload API), then sent by Meta's attachment id.
    [upload] = (await clean.sandbox("GET", "/_sandbox/uploads")).json()["data"]
    assert (upload["type"], upload["url"], upload["is_reusable"]) == (
        "image",
        "https://cdn.example/a.png",
        True,
    )
    sent = (await clean.sandbox("GET", "/_sandbox/sent")).json()["data"]
    assert sent[0]["message"] == {
        "attachment": {"type": "image", "payload": {"attachment_id": upload["attachment_id"]}}
    }


async def test_meta_errors_fail_the_message_with_metas_code(account, clean):
    chat = await _chat(account)
    await clean.sandbox(
        "POST",
        "/_sandbox/faults",
        json={
            "recipients": {
                CUSTOMER: {
                    "code": 551,
                    "error_subcode": 1545041,
                    "message": "This person isn't available right now.",
                }
            }
        },
    )
    message = await account.client.messages.send(chat.id, body="hi")
    failed = await _settled(account.client, message.id)
    assert failed.status == "failed"
    assert failed.error_details.platform_error_code == "551"
    assert failed.error_details.platform_error_subcode == "1545041"
    assert "isn't available" in failed.error_message
    assert (await clean.sandbox("GET", "/_sandbox/sent")).json()["data"] == []


async def test_a_revoked_token_fails_the_send_and_expires_the_profile(account, clean):
    chat = await _chat(account)
    await clean.sandbox("POST", "/_sandbox/faults", json={"revoked_tokens": ["sandbox-token"]})
    message = await account.client.messages.send(chat.id, body="hi")
    failed = await _settled(account.client, message.id)
    assert failed.error_details.platform_error_code == "190"
    assert "reconnect" in failed.error_message
    assert (await account.client.profiles.get(account.profile_id)).status == "expired"
    with pytest.raises(ValidationError, match="expired"):
        await account.client.messages.send(chat.id, body="again")


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({}, "needs a body"),
        ({"body": ""}, "needs a body"),
        ({"body": "x" * 1001}, "1001 characters"),
        ({"body": "é" * 501}, "1002 UTF-8 bytes"),
        ({"body": "hi", "media": ["https://cdn.example/a.png"]}, "separate messages"),
        ({"media": ["https://a.example/1.png", "https://a.example/2.png"]}, "one attachment"),
        ({"media": ["ftp://a.example/1.png"]}, "http(s)"),
        ({"media": ["https://a.example/file.exe"]}, "media type"),
        ({"body": 5}, "body"),
        ({"body": "hi", "tag": "ACCOUNT_UPDATE"}, "tag"),
        ({"body": "hi", "reply_markup": {"inline_keyboard": []}}, "reply_markup"),
        ({"body": "hi", "colour": "red"}, "colour"),
        ({"body": "a\x00b"}, "U+0000"),
        ({"body": "hi", "reply_to_external_id": "aWdf\x00"}, "U+0000"),
        ({"media": ["https://a.example/\x00.png"]}, "U+0000"),
        ({"body": "   "}, "body: must hold some text, not only whitespace"),
        ({"body": "\n\t\u3000"}, "body: must hold some text, not only whitespace"),
        ({"body": " ", "media": ["https://cdn.example/a.png"]}, "only whitespace"),
        ({"media": ["http://169.254.169.254/x.jpg"]}, "169.254.169.254 is not a public address"),
        ({"media": ["http://127.0.0.1:8000/a.png"]}, "127.0.0.1 is not a public address"),
        ({"media": ["http://10.0.0.1/a.png"]}, "10.0.0.1 is not a public address"),
        ({"media": ["http://[::1]/a.png"]}, "::1 is not a public address"),
        ({"media": ["https://[fe80::1%25eth0]/a.png"]}, "is not a public address"),
        ({"media": ["http://2130706433/a.png"]}, "127.0.0.1 is not a public address"),
        ({"media": ["http://localhost/a.png"]}, "localhost is a local name"),
        ({"media": ["http://Cdn.LOCALHOST./a.png"]}, "is a local name"),
        ({"media": ["http://metadata.google.internal/a.png"]}, "is a local name"),
        ({"media": ["http://intranet/a.png"]}, "not a public host name"),
    ],
)
async def test_bad_sends_are_422_and_store_nothing(account, clean, body, complaint):
    chat = await _chat(account)
    async with httpx.AsyncClient(base_url=account.client.base_url) as http:
        response = await http.post(
            f"/api/chats/{chat.id}/messages",
            json=body,
            headers={"Authorization": f"Bearer {account.token}"},
        )
    assert response.status_code == 422, response.text
    assert complaint in response.json()["error"]
    assert isinstance(response.json()["errors"], list)
    async with clean.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 0


async def test_exactly_1000_bytes_is_accepted(account, clean):
    chat = await _chat(account)
    message = await account.client.messages.send(chat.id, body="€" * 333 + "x")
    assert (await _settled(account.client, message.id)).status == "published"


async def test_send_to_unknown_chat_is_404(account):
    with pytest.raises(NotFoundError, match="Chat not found"):
        await account.client.messages.send("nope", body="hi")


async def test_closed_window_is_refused_naming_last_inbound_at(account, clean):
    chat = await _chat(account, datetime.now(UTC) - timedelta(hours=25), clean)
    with pytest.raises(ValidationError, match="last_inbound_at") as refused:
        await account.client.messages.send(chat.id, body="too late")
    assert "HUMAN_AGENT" in str(refused.value)
    # A human agent may still answer within 7 days, and Meta is told so.
    message = await account.client.messages.send(chat.id, body="agent here", tag="HUMAN_AGENT")
    assert (await _settled(account.client, message.id)).status == "published"
    sent = (await clean.sandbox("GET", "/_sandbox/sent")).json()["data"]
    assert (sent[0]["messaging_type"], sent[0]["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")


async def test_after_seven_days_even_human_agent_is_refused(account, clean):
    chat = await _chat(account, datetime.now(UTC) - timedelta(days=8), clean)
    with pytest.raises(ValidationError, match="7 days"):
        await account.client.messages.send(chat.id, body="late", tag="HUMAN_AGENT")


async def test_open_window_and_unknown_window_are_accepted(account, clean):
    chat = await _chat(account)
    assert (await account.client.messages.send(chat.id, body="first contact")).status == "pending"
    async with clean.sessionmaker() as session, session.begin():
        await session.execute(
            update(Chat).values(last_inbound_at=datetime.now(UTC) - timedelta(hours=23))
        )
    assert (await account.client.messages.send(chat.id, body="in time")).status == "pending"


async def test_a_send_in_a_unit_of_work_is_queued_only_once_it_commits(account, clean):
    """The REST routes' and MCP tools' send (service.send_in_session): its chat's job is
    enqueued after the commit, never before it, and not at all if the unit of work rolls
    back (with the message)."""
    chat = await _chat(account)
    pool = clean.worker.pool
    clean.worker.allow_pick_jobs = False  # the jobs stay in Redis to be seen (`clean` resets)

    async def queued() -> list[str]:
        jobs = await pool.queued_jobs()
        return sorted(j.job_id for j in jobs if j.job_id and not j.function.startswith("cron:"))

    async def stored() -> int:
        async with clean.sessionmaker() as session:
            return await session.scalar(select(func.count()).select_from(Message))

    class Undone(Exception):
        pass

    undone = session_scope(clean.sessionmaker, pool)
    session = await anext(undone)
    # As in a route, whose key lookup begins the transaction the send's statement joins.
    await session.execute(select(1))
    await service.send_in_session(session, Scope(0, None), chat.id, MessageSend(body="undone"))
    with contextlib.suppress(Undone):
        await undone.athrow(Undone)
    assert (await queued(), await stored()) == ([], 0)

    unit = session_scope(clean.sessionmaker, pool)
    session = await anext(unit)
    message = await service.send_in_session(
        session, Scope(0, None), chat.id, MessageSend(body="queued once committed")
    )
    assert await queued() == []  # not before the commit: the worker could not see the row
    with contextlib.suppress(StopAsyncIteration):
        await anext(unit)  # commits, then queues
    assert (await queued(), await stored()) == ([f"deliver:{message.chat_id}"], 1)


async def test_messages_list_newest_first_with_filters(account, clean):
    chat = await _chat(account)
    for n in range(3):
        message = await account.client.messages.send(chat.id, body=f"m{n}")
        await _settled(account.client, message.id)
    listed = await account.client.messages.list(chat.id)
    assert listed.total == 3
    assert [m.body for m in listed.data] == ["m2", "m1", "m0"]
    assert (await account.client.messages.list(chat.id, direction="inbound")).total == 0
    assert (await account.client.messages.list(chat.id, status="published")).total == 3
    second_page = await account.client.messages.list(chat.id, page=1, per_page=2)
    assert [m.body for m in second_page.data] == ["m0"]
    with pytest.raises(ValidationError):
        await account.client.messages.list(chat.id, status="weird")


async def test_concurrent_sends_to_one_chat_are_counted_exactly_without_writing_its_row(
    account, clean
):
    # The count is kept in shards (migration 0017): sends on many connections at once add to
    # different rows, none to the chat's, and the total stays exact.
    chat = await _chat(account)
    clean.worker.allow_pick_jobs = False  # the worker would write the chat (lease, times)
    try:
        await wait_for(_worker_idle(clean.worker))
        row_version = await scalar(clean, "SELECT xmin::text FROM chats")
        sent = await asyncio.gather(
            *(account.client.messages.send(chat.id, body=f"m{n}") for n in range(40))
        )
        assert {message.status for message in sent} == {"pending"}
        assert await scalar(clean, "SELECT xmin::text FROM chats") == row_version
        assert (await account.client.messages.list(chat.id)).total == 40
        shards = await scalar(clean, "SELECT count(*) FROM chat_message_counts")
        assert 1 <= shards <= 256
    finally:
        clean.worker.allow_pick_jobs = True
    async with clean.sessionmaker() as session, session.begin():
        await session.execute(delete(Message).where(Message.body.in_(["m0", "m1", "m2"])))
    assert (await account.client.messages.list(chat.id)).total == 37
    assert await scalar(clean, "SELECT sum(n) FROM chat_message_counts") == 37


async def test_migration_0019_spreads_the_counts_over_256_shards_and_back(clean):
    """Fewer backends share a shard's row (and wait on it) over 256 shards than over 16."""
    config = alembic_config(clean.settings)
    trigger = "SELECT prosrc FROM pg_proc WHERE proname = 'count_messages_insert'"
    await asyncio.to_thread(command.downgrade, config, "0018")
    try:
        assert "pg_backend_pid() % 16," in await scalar(clean, trigger)
    finally:
        await asyncio.to_thread(command.upgrade, config, "head")
    assert "pg_backend_pid() % 256," in await scalar(clean, trigger)


@pytest.mark.parametrize(
    "case", ["accepted", "window closed", "unknown chat", "bad body", "blank body", "local media"]
)
async def test_the_express_lane_answers_as_the_route_does(account, clean, case):
    # A query string sends a request to the FastAPI route; without one, a request with a
    # recently verified key takes the express lane (app/messages/express.py).
    chat = await _chat(account)
    profile = await account.client.profiles.get(account.profile_id)
    if case == "window closed":
        async with clean.sessionmaker() as session, session.begin():
            await session.execute(
                update(Chat).values(last_inbound_at=func.now() - timedelta(days=2))
            )
    chat_id = "nope" if case == "unknown chat" else chat.id
    body = {
        "bad body": {"body": "x" * 1001},
        "blank body": {"body": " \n "},
        "local media": {"media": ["http://169.254.169.254/latest/x.jpg"]},
    }.get(case, {"body": "same"})
    answers = []
    async with httpx.AsyncClient(
        base_url=account.client.base_url, headers={"Authorization": f"Bearer {account.token}"}
    ) as http:
        for query in ({"profile_group_id": profile.profile_group_id}, {}):
            response = await http.post(f"/api/chats/{chat_id}/messages", params=query, json=body)
            assert response.headers["x-request-id"]
            answer = response.json()
            for varying in ("id", "created_at"):
                answer.pop(varying, None)
            answers.append((response.status_code, answer))
    assert answers[0] == answers[1]
    async with clean.sessionmaker() as session:
        stored = await session.scalar(select(func.count()).select_from(Message))
    assert stored == (2 if case == "accepted" else 0)
    assert answers[0][0] == {"accepted": 202, "unknown chat": 404}.get(case, 422)


def test_the_api_names_exactly_the_enums_values():
    assert set(get_args(DirectionName)) == {direction.value for direction in Direction}
    assert set(get_args(StatusName)) == {status.value for status in MessageStatus}
