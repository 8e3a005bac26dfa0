"""Every query of messages, and the one implementation of each state change of an outbound
message: accepted (`raw_accept`), claimed (`raw_claim`), published (SQL `publish_send`, by
`raw_publish` and `publish_echoed`), failed or waiting for a retry (`record_failure`), given
back (`give_back`), pending again (`reset_for_retry`).

`raw_*` functions run SQL text on asyncpg: the hot paths (accepting a send, the worker's send
loop). Through SQLAlchemy, building and running these statements cost more CPU than the rest
of a send. The send loop runs them in autocommit mode, each standing alone. The others take
an autocommit engine (the send loop's statements off its hot path) or the caller's session.
"""

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from sqlalchemy import ColumnElement, case, func, null, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api_keys.auth import Scope
from app.chats.models import Chat, ChatMessageCount
from app.core.models import sql_values
from app.core.pagination import PageParams, fetch_page
from app.events import service as events
from app.events.models import CustomerEventType
from app.messages.models import UNDELIVERED, Direction, Message, MessageRow, MessageStatus
from app.profiles import repository as profiles_repository
from app.profiles.models import Profile, ProfileStatus
from app.profiles.repository import visible

# An asyncpg connection: a pool's, or the one under a session (app/core/db.py).
Driver = asyncpg.Connection | PoolConnectionProxy


# -- Accepting a send (raw asyncpg) ---------------------------------------------------------

# One round trip: find the chat the caller may see, check the profile and the window,
# insert. The row comes back even when nothing was inserted, so that the refusal can be
# explained (with the database's clock, the one the condition used).
_ACCEPT = f"""
WITH chat AS (
    SELECT chats.id, chats.profile_id, chats.last_inbound_at, profiles.status AS profile_status
    FROM chats JOIN profiles ON profiles.id = chats.profile_id
    WHERE {{match}} AND ($2::bigint IS NULL OR profiles.profile_group_id = $2)
        AND profiles.erasing_since IS NULL
    LIMIT 1
), sent AS (
    INSERT INTO messages
        (chat_id, profile_id, direction, status, body, tag, attachment, reply_to_external_id,
         interactive, traceparent)
    SELECT id, profile_id, '{Direction.OUTBOUND}', '{MessageStatus.PENDING}', $3, $4, $5::jsonb, $6,
        $8::jsonb, $9
    FROM chat
    WHERE profile_status = '{ProfileStatus.ACTIVE}'
        AND (last_inbound_at IS NULL OR last_inbound_at >= now() - $7::interval)
    RETURNING id, created_at
)
SELECT chat.id AS chat_id, chat.profile_id, chat.last_inbound_at, chat.profile_status,
    now() AS now, sent.id, sent.created_at
FROM chat LEFT JOIN sent ON true
"""
# By our public id or by Meta's conversation id (which never decodes as ours).
_ACCEPT_BY_SERIAL = _ACCEPT.format(match="chats.id = $1")
_ACCEPT_BY_CONVERSATION = _ACCEPT.format(match="chats.external_conversation_id = $1")


@dataclass(frozen=True, slots=True)
class Acceptance:
    """The chat a send was for, and the message if it was inserted (its id and creation
    time are None if the profile or the window kept it out)."""

    chat_id: int
    profile_id: int
    last_inbound_at: datetime | None
    profile_status: str
    now: datetime
    message_id: int | None
    created_at: datetime | None


async def raw_accept(
    connection: Driver,
    chat: int | str,
    profile_group_id: int | None,
    body: str | None,
    tag: str | None,
    attachment: dict[str, Any] | None,
    reply_to_external_id: str | None,
    window: timedelta,
    interactive: dict[str, Any] | None = None,
    traceparent: str | None = None,
) -> Acceptance | None:
    """Insert a pending outbound message in the chat (our serial, or Meta's conversation id)
    if the key may see it, its profile is active and its window open; None if no such chat."""
    row = await connection.fetchrow(
        _ACCEPT_BY_SERIAL if isinstance(chat, int) else _ACCEPT_BY_CONVERSATION,
        chat,
        profile_group_id,
        body,
        tag,
        json.dumps(attachment) if attachment else None,
        reply_to_external_id,
        window,
        json.dumps(interactive) if interactive else None,
        traceparent,
    )
    return None if row is None else Acceptance(*row)


# -- The send loop (raw asyncpg) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outbound:
    """An outbound message on its way to Meta: plain, not an ORM object, as one is built for
    every send (an ORM object costs far more to build and track)."""

    id: int
    chat_id: int
    profile_id: int
    body: str | None
    tag: str | None
    attachment: dict[str, Any] | None
    reply_to_external_id: str | None
    attempts: int
    claimed_until: datetime | None
    next_attempt_at: datetime | None
    interactive: dict[str, Any] | None = None
    external_comment_id: str | None = None
    # The trace its send joins (app/core/tracing.py); None unless accepted while tracing.
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class Head:
    """A chat's oldest undelivered message (SQL `send_head`), with who it goes to and the
    account it goes from."""

    message: Outbound
    participant_id: str
    connection: str
    platform_id: str
    page_id: str | None
    access_token_encrypted: str = field(repr=False)


class Claim(NamedTuple):
    """An attempt to start: the message, by the worker holding its chat's lease."""

    message_id: int
    owner: int


@dataclass(frozen=True, slots=True)
class Answered:
    """A send Meta answered: the message, the attempt that sent it, and Meta's id and time."""

    message: Outbound
    attempts: int
    external_id: str
    posted_at: datetime


_TAKE_LEASE = """
UPDATE chats SET send_lease_until = now() + $2::interval, send_lease_owner = $3
WHERE id = $1 AND (send_lease_until IS NULL OR send_lease_until < now())
RETURNING id
"""
# The owner's alone: a lease that ran out and was taken since is another worker's.
_RENEW_LEASE = """
UPDATE chats SET send_lease_until = now() + $2::interval
WHERE id = $1 AND send_lease_owner = $3
RETURNING id
"""
_RELEASE_LEASE = """
UPDATE chats SET send_lease_until = NULL, send_lease_owner = NULL
WHERE id = $1 AND send_lease_owner = $2
"""
# The chat's next message to send (migrations 0005, 0008), and publishing messages (0008:
# each only while still on the attempt that sent it), which answers with the next.
_HEAD = "SELECT * FROM send_head($1)"
_PUBLISH = "SELECT * FROM publish_sends($1, $2, $3, $4, $5, $6)"
# Only with the chat's lease, and never over another attempt's live claim. The chats are
# read, not locked (an UPDATE locks its target's rows alone): inbound processing locks a
# chat, then its messages, so a statement that locked both the other way round could
# deadlock with it.
_CLAIM = f"""
UPDATE messages m SET claimed_until = now() + $3::interval, attempts = m.attempts + 1
FROM unnest($1::bigint[], $2::bigint[]) AS t(id, owner), chats c
WHERE m.id = t.id AND c.id = m.chat_id AND c.send_lease_owner = t.owner
    AND m.status IN {sql_values(UNDELIVERED)}
    AND (m.claimed_until IS NULL OR m.claimed_until <= now())
RETURNING m.id, m.attempts
"""


async def raw_appsecret_proof(db: asyncpg.Pool, profile_id: int) -> bool:
    """Whether the profile opted in to appsecret_proof (with an Instagram Login token)."""
    return bool(await db.fetchval("SELECT appsecret_proof FROM profiles WHERE id = $1", profile_id))


async def raw_take_lease(db: asyncpg.Pool, chat_id: int, lease: timedelta, owner: int) -> bool:
    """Lease the chat to `owner` for `lease`, unless another worker's lease on it is live."""
    return await db.fetchval(_TAKE_LEASE, chat_id, lease, owner) is not None


async def raw_renew_lease(db: asyncpg.Pool, chat_id: int, lease: timedelta, owner: int) -> bool:
    """Make the chat's lease run `lease` from now, if `owner` still holds it."""
    return await db.fetchval(_RENEW_LEASE, chat_id, lease, owner) is not None


async def raw_release_lease(db: asyncpg.Pool, chat_id: int, owner: int) -> None:
    await db.execute(_RELEASE_LEASE, chat_id, owner)


async def raw_head(db: asyncpg.Pool, chat_id: int) -> Head | None:
    row = await db.fetchrow(_HEAD, chat_id)
    return _head(row) if row is not None else None


async def raw_claim(db: asyncpg.Pool, claims: list[Claim], lease: timedelta) -> list[int | None]:
    """Start an attempt at each message, claimed for `lease`: its attempt number, or None if
    it was delivered meanwhile, is claimed by a live attempt, or its chat's lease is not the
    claim's owner's."""
    rows = await db.fetch(
        _CLAIM, [claim.message_id for claim in claims], [claim.owner for claim in claims], lease
    )
    attempts = {row["id"]: row["attempts"] for row in rows}
    return [attempts.get(claim.message_id) for claim in claims]


async def raw_publish(db: asyncpg.Pool, answers: list[Answered]) -> list[Head | None]:
    """Mark each message published with Meta's id (SQL `publish_send`), if it is still on the
    attempt that sent it, and move its chat's times; each chat's next head."""
    # In chat order, as every transaction that locks several chats takes them.
    ordered = sorted(answers, key=lambda answer: answer.message.chat_id)
    heads = await db.fetch(
        _PUBLISH,
        [answer.message.id for answer in ordered],
        [answer.message.chat_id for answer in ordered],
        [answer.message.profile_id for answer in ordered],
        [answer.external_id for answer in ordered],
        [answer.posted_at for answer in ordered],
        [answer.attempts for answer in ordered],
    )
    by_chat = {row["chat_id"]: _head(row) for row in heads}
    return [by_chat.get(answer.message.chat_id) for answer in answers]


def _head(row: asyncpg.Record) -> Head:
    message = Outbound(
        id=row["id"],
        chat_id=row["chat_id"],
        profile_id=row["profile_id"],
        body=row["body"],
        tag=row["tag"],
        attachment=json.loads(row["attachment"]) if row["attachment"] else None,
        reply_to_external_id=row["reply_to_external_id"],
        attempts=row["attempts"],
        claimed_until=row["claimed_until"],
        next_attempt_at=row["next_attempt_at"],
        interactive=json.loads(row["interactive"]) if row["interactive"] else None,
        external_comment_id=row["external_comment_id"],
        traceparent=row["traceparent"],
    )
    return Head(
        message,
        participant_id=row["participant_external_id"],
        connection=row["connection"],
        platform_id=row["platform_id"],
        page_id=row["page_id"],
        access_token_encrypted=row["access_token_encrypted"],
    )


# -- The send loop's other outcomes (SQLAlchemy Core, autocommit) ---------------------------


async def release_held(session: AsyncSession, profile_id: int) -> set[int]:
    """End the waits of the profile's undelivered messages; the chats they are in."""
    chats = await session.scalars(
        update(Message)
        .where(Message.profile_id == profile_id, Message.status.in_(UNDELIVERED))
        .values(next_attempt_at=None)
        .returning(Message.chat_id)
    )
    return set(chats.all())


def _on_attempt(message_id: int, attempts: int) -> tuple[ColumnElement[bool], ...]:
    """The message, if it is still undelivered and on this attempt."""
    return (
        Message.id == message_id,
        Message.status.in_(UNDELIVERED),
        Message.attempts == attempts,
    )


async def record_failure(
    engine: AsyncEngine,
    message_id: int,
    attempts: int,
    reason: str,
    details: dict[str, str | None],
    retry_after: timedelta | None,
    refused_token: tuple[int, str] | None,
) -> bool:
    """Record a failed attempt: `failed_waiting_for_retry` until `retry_after` from now, or
    `failed` if None, with its customer event, in one transaction; False if the message is
    no longer undelivered on this attempt. If Meta refused the token (`refused_token`: the
    profile's id and the token, encrypted), the profile is marked expired either way, unless
    it holds another token by now."""
    retry = retry_after is not None
    status = MessageStatus.FAILED_WAITING_FOR_RETRY if retry else MessageStatus.FAILED
    async with engine.connect() as autocommit:
        # The engine commits each statement alone; this change and its event go together.
        connection = await autocommit.execution_options(isolation_level="READ COMMITTED")
        async with connection.begin():
            failed = (
                await connection.execute(
                    update(Message)
                    .where(*_on_attempt(message_id, attempts))
                    .values(
                        status=status,
                        error_message=reason,
                        error_details=details,
                        claimed_until=None,
                        next_attempt_at=func.now() + retry_after if retry else None,
                    )
                    .returning(*_MESSAGE_COLUMNS)
                )
            ).one_or_none()
            if failed is not None:
                message = MessageRow(**failed._mapping)
                await events.write_message_event(
                    connection, _FAILURE_EVENTS[status], message, message.updated_at
                )
            if refused_token is not None:
                await profiles_repository.expire(connection, *refused_token)
    return failed is not None


_MESSAGE_COLUMNS = tuple(Message.__table__.columns)
_FAILURE_EVENTS = {
    MessageStatus.FAILED_WAITING_FOR_RETRY: CustomerEventType.MESSAGE_FAILED_WAITING_FOR_RETRY,
    MessageStatus.FAILED: CustomerEventType.MESSAGE_FAILED,
}


async def give_back(
    engine: AsyncEngine,
    message_id: int,
    attempts: int,
    wait: timedelta | None,
    while_expired: bool = False,
) -> bool | None:
    """Give a claimed message its claim and attempt back (nothing was sent), and hold it
    `wait` from now if given; with `while_expired`, only if its profile is still expired
    (a reconnect that committed meanwhile has released it: it must not be held again).
    Whether it is now held; None if it was not given back (no longer undelivered on this
    attempt)."""
    values: dict[str, Any] = {"claimed_until": None, "attempts": Message.attempts - 1}
    if wait is not None:
        hold: ColumnElement[Any] = func.now() + wait
        if while_expired:
            # The profile's row is read locked (FOR SHARE), so that a reconnect either
            # commits first (its new status is what is read: the lock waits for it) or
            # waits for this statement, then releases the message it held back.
            status = (
                select(Profile.status)
                .where(Profile.id == Message.profile_id)
                .with_for_update(read=True)
                .scalar_subquery()
            )
            hold = case((status == ProfileStatus.EXPIRED, hold), else_=null())
        values["next_attempt_at"] = hold
    async with engine.connect() as connection:
        given_back = await connection.execute(
            update(Message)
            .where(*_on_attempt(message_id, attempts))
            .values(values)
            .returning(Message.next_attempt_at)
        )
        row = given_back.first()
    return None if row is None else wait is not None and row[0] is not None


async def status_of(engine: AsyncEngine, message_id: int) -> str | None:
    async with engine.connect() as connection:
        return await connection.scalar(select(Message.status).where(Message.id == message_id))


async def stranded_chats(engine: AsyncEngine, grace: timedelta, limit: int) -> list[int]:
    """Chats with a message due for `grace` and no live lease: no job or worker has them."""
    async with engine.connect() as connection:
        chat_ids = await connection.scalars(
            select(Message.chat_id)
            .join(Chat, Chat.id == Message.chat_id)
            .where(
                Message.direction == Direction.OUTBOUND,
                Message.status.in_(UNDELIVERED),
                func.coalesce(Message.next_attempt_at, Message.created_at) < func.now() - grace,
                or_(Chat.send_lease_until.is_(None), Chat.send_lease_until < func.now()),
            )
            .distinct()
            .limit(limit)
        )
        return list(chat_ids.all())


class Backlog(NamedTuple):
    """Outbound messages not delivered yet: how many, per status, and the oldest one's age."""

    by_status: dict[str, int]
    oldest_seconds: float | None


_BACKLOG = f"""
SELECT status, count(*) AS n, extract(epoch FROM now() - min(created_at)) AS oldest
FROM messages
WHERE status IN {sql_values(UNDELIVERED)} AND direction = '{Direction.OUTBOUND}'
GROUP BY status
"""


async def raw_backlog(db: asyncpg.Pool) -> Backlog:
    """For the metrics (app/messages/monitoring.py); the partial index ix_messages_undelivered
    holds exactly these rows."""
    async with db.acquire() as connection:
        rows = await connection.fetch(_BACKLOG)
    by_status = {str(status): 0 for status in UNDELIVERED}
    ages = []
    for row in rows:
        by_status[row["status"]] = row["n"]
        ages.append(float(row["oldest"]))
    return Backlog(by_status, max(ages) if ages else None)


# -- In the caller's session (ORM) ------------------------------------------------------------

_PUBLISH_ONE = text("SELECT publish_send(:message_id, :mid, :posted_at)")


async def publish_echoed(
    session: AsyncSession, message: Message, mid: str, posted_at: datetime
) -> None:
    """Mark an undelivered message published by its echo, in the session's transaction: the
    state change `raw_publish` makes (SQL `publish_send`, which records `message.sent`). The
    message's loaded columns are expired, so the next load of it in the session reads them
    as they are now."""
    await session.execute(
        _PUBLISH_ONE, {"message_id": message.id, "mid": mid, "posted_at": posted_at}
    )
    session.expire(message)


async def confirm_echoed(
    session: AsyncSession, message: Message, mid: str, posted_at: datetime
) -> None:
    """Meta's echo of one of our sends shows it in the conversation: published, if the send's
    answer has not done it (`publish_echoed`), and `message.delivered` recorded, in the
    session's transaction. Applied once per echo (inbound dedupes them)."""
    if message.status in UNDELIVERED:
        await publish_echoed(session, message, mid, posted_at)
        await session.refresh(message)
    if message.status == MessageStatus.PUBLISHED:
        events.record_message(
            session, message.profile_id, CustomerEventType.MESSAGE_DELIVERED, message, posted_at
        )


async def claimed_candidates(
    session: AsyncSession, chat_id: int, body: str | None, attachment_type: str | None
) -> list[Message]:
    """The chat's messages being sent right now (claimed, Meta's id still unknown) with this
    content, text or (if given) an attachment of this type, oldest first; two at most, locked."""
    conditions = [
        Message.chat_id == chat_id,
        Message.direction == Direction.OUTBOUND,
        Message.external_id.is_(None),
        Message.status.in_(UNDELIVERED),
        Message.claimed_until > func.now(),
        Message.attachment["type"].astext == attachment_type
        if attachment_type is not None
        else Message.body == body,
    ]
    return list(
        await session.scalars(
            select(Message).where(*conditions).order_by(Message.id).limit(2).with_for_update()
        )
    )


async def reset_for_retry(session: AsyncSession, message: Message) -> None:
    """A failed message back to pending, its attempts at 0, due now."""
    message.status = MessageStatus.PENDING
    message.attempts = 0
    message.error_message = None
    message.error_details = None
    message.claimed_until = None
    message.next_attempt_at = func.now()
    await session.flush()
    await session.refresh(message)


async def find(session: AsyncSession, scope: Scope, serial_or_mid: int | str) -> Message | None:
    """A message the key may see, by our serial or by Meta's message id (mid)."""
    condition = (
        Message.id == serial_or_mid
        if isinstance(serial_or_mid, int)
        else Message.external_id == serial_or_mid
    )
    found: Message | None = await session.scalar(
        visible(select(Message).join(Profile, Profile.id == Message.profile_id), scope)
        .where(condition)
        .limit(1)
    )
    return found


async def message_count(session: AsyncSession, chat_id: int) -> int:
    """The chat's messages, as its trigger-kept count says (the sum of its shards)."""
    total = await session.scalar(
        select(func.coalesce(func.sum(ChatMessageCount.n), 0)).where(
            ChatMessageCount.chat_id == chat_id
        )
    )
    return int(total or 0)


async def page_of_chat(
    session: AsyncSession,
    chat_id: int,
    page: PageParams,
    *,
    direction: str | None,
    status: str | None,
    total: int | None,
) -> tuple[list[Message], int]:
    """A page of the chat's messages, newest first (of this direction and status, if given),
    and how many there are: `total` if known, else counted."""
    conditions = [Message.chat_id == chat_id]
    if direction is not None:
        conditions.append(Message.direction == direction)
    if status is not None:
        conditions.append(Message.status == status)
    order = [Message.sort_at.desc(), Message.id.desc()]
    return await fetch_page(session, Message, conditions, order, page, total)
