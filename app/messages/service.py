import json
from datetime import datetime
from functools import partial
from typing import NoReturn

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys.auth import Scope
from app.chats import window
from app.chats.models import Chat
from app.core import ids
from app.core.db import after_commit
from app.core.errors import APIError, NotFound
from app.core.pagination import PageParams, fetch_page
from app.messages.delivery import request_delivery
from app.messages.models import Message
from app.messages.schemas import MessageSend
from app.profiles.models import Profile
from app.profiles.repository import visible


def check_window(last_inbound_at: datetime | None, tag: str | None, now: datetime) -> None:
    """Refuse a reply outside Meta's messaging window (app/chats/window.py)."""
    reason = window.closed_reason(last_inbound_at, now, tag)
    if reason is not None:
        # A fact about the chat, not about a field of the request: `errors` stays empty.
        raise APIError(422, reason)


# The hot path, in one round trip: find the chat the caller may see, check the profile and
# the window, insert. The row comes back even when nothing was inserted, so that the refusal
# can be explained (with the database's clock, the one the condition used).
_SEND = """
WITH chat AS (
    SELECT chats.id, chats.profile_id, chats.last_inbound_at, profiles.status AS profile_status
    FROM chats JOIN profiles ON profiles.id = chats.profile_id
    WHERE {match} AND ($2::bigint IS NULL OR profiles.profile_group_id = $2)
    LIMIT 1
), sent AS (
    INSERT INTO messages
        (chat_id, profile_id, direction, status, body, tag, attachment, reply_to_external_id)
    SELECT id, profile_id, 'outbound', 'pending', $3, $4, $5::jsonb, $6 FROM chat
    WHERE profile_status = 'active'
        AND (last_inbound_at IS NULL OR last_inbound_at >= now() - $7::interval)
    RETURNING id, created_at
)
SELECT chat.id AS chat_id, chat.profile_id, chat.last_inbound_at, chat.profile_status,
    now() AS now, sent.id, sent.created_at
FROM chat LEFT JOIN sent ON true
"""
# By our public id or by Meta's conversation id (which never decodes as ours).
SEND_BY_SERIAL = _SEND.format(match="chats.id = $1")
SEND_BY_CONVERSATION = _SEND.format(match="chats.external_conversation_id = $1")


async def send(
    connection: asyncpg.Connection, scope: Scope, chat_id: str, fields: MessageSend
) -> Message:
    chat = ids.lookup(ids.Kind.CHAT, chat_id)
    if chat is None:
        raise NotFound("Chat")
    row = await connection.fetchrow(
        SEND_BY_SERIAL if isinstance(chat, int) else SEND_BY_CONVERSATION,
        chat,
        scope.profile_group_id,
        fields.body,
        fields.tag,
        json.dumps(fields.attachment) if fields.attachment else None,
        fields.reply_to_external_id,
        window.length(fields.tag),
    )
    if row is None:
        raise NotFound("Chat")
    if row["id"] is None:
        _refuse(row, fields.tag)
    return Message(
        id=row["id"],
        chat_id=row["chat_id"],
        profile_id=row["profile_id"],
        direction="outbound",
        status="pending",
        body=fields.body,
        tag=fields.tag,
        attachment=fields.attachment,
        reply_to_external_id=fields.reply_to_external_id,
        is_unsupported=False,
        created_at=row["created_at"],
    )


def _refuse(chat: asyncpg.Record, tag: str | None) -> NoReturn:
    """Why the send's conditions kept the message out."""
    if chat["profile_status"] != "active":
        raise APIError(
            422,
            f"The profile is {chat['profile_status']}: reconnect the Instagram account "
            "(dmrelay profiles add … with a fresh access token) before sending",
        )
    check_window(chat["last_inbound_at"], tag, chat["now"])
    raise RuntimeError(f"send to chat {chat['chat_id']} refused for no known reason")


def queue_delivery(session: AsyncSession, chat_id: int) -> None:
    after_commit(session, partial(request_delivery, chat_id=chat_id))


async def retry(session: AsyncSession, scope: Scope, message_id: str) -> Message:
    """Queue a failed outbound message again, with its attempts reset."""
    message = await get_message(session, scope, message_id)
    if message.direction != "outbound" or message.status != "failed":
        raise APIError(
            422,
            f"Only a failed outbound message can be retried; this one is "
            f"{message.direction} and {message.status}",
        )
    message.status = "pending"
    message.attempts = 0
    message.error_message = None
    message.error_details = None
    message.claimed_until = None
    message.next_attempt_at = func.now()
    await session.flush()
    await session.refresh(message)
    queue_delivery(session, message.chat_id)
    return message


async def list_messages(
    session: AsyncSession,
    chat: Chat,
    page: PageParams,
    direction: str | None,
    status: str | None,
) -> tuple[list[Message], int]:
    conditions = [Message.chat_id == chat.id]
    if direction is not None:
        conditions.append(Message.direction == direction)
    if status is not None:
        conditions.append(Message.status == status)
    filtered = direction is not None or status is not None
    order = [Message.sort_at.desc(), Message.id.desc()]
    kept_total = None if filtered else chat.message_count
    return await fetch_page(session, Message, conditions, order, page, kept_total)


async def get_message(session: AsyncSession, scope: Scope, message_id: str) -> Message:
    """A message by our public id or by Meta's message id (mid)."""
    # Meta's mid never decodes as ours: only the canonical encoding of a serial does.
    match ids.lookup(ids.Kind.MESSAGE, message_id):
        case int(serial):
            condition = Message.id == serial
        case str(mid):
            condition = Message.external_id == mid
        case None:
            raise NotFound("Message")
    message = await session.scalar(
        visible(select(Message).join(Profile, Profile.id == Message.profile_id), scope)
        .where(condition)
        .limit(1)
    )
    if message is None:
        raise NotFound("Message")
    return message
