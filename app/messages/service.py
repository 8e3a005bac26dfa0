from datetime import UTC, datetime, timedelta
from functools import partial

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys.auth import Scope
from app.chats.models import Chat
from app.chats.service import find_chat_to_send
from app.core import ids
from app.core.db import after_commit
from app.core.errors import APIError, NotFound
from app.core.pagination import PageParams, fetch_page
from app.messages.delivery import request_delivery
from app.messages.models import Message
from app.messages.schemas import HUMAN_AGENT, MessageSend
from app.profiles.models import Profile
from app.profiles.service import visible

STANDARD_WINDOW = timedelta(hours=24)
HUMAN_AGENT_WINDOW = timedelta(days=7)


def check_window(last_inbound_at: datetime | None, tag: str | None, now: datetime) -> None:
    """Meta refuses replies more than 24 h after the customer's last message (7 days with
    HUMAN_AGENT). With no inbound message on record, Meta is left to decide."""
    if last_inbound_at is None:
        return
    window = HUMAN_AGENT_WINDOW if tag == HUMAN_AGENT else STANDARD_WINDOW
    if now - last_inbound_at <= window:
        return
    last = last_inbound_at.isoformat()
    if tag == HUMAN_AGENT or now - last_inbound_at > HUMAN_AGENT_WINDOW:
        advice = "Instagram allows no reply until the participant writes again."
    else:
        advice = "A human agent may still reply within 7 days with tag HUMAN_AGENT."
    length = "7 days" if window == HUMAN_AGENT_WINDOW else "24 hours"
    message = (
        f"The messaging window is closed: the participant's last message (last_inbound_at "
        f"{last}) is more than {length} old. {advice}"
    )
    raise APIError(422, message, [{"field": "last_inbound_at", "message": message}])


async def send(session: AsyncSession, scope: Scope, chat_id: str, fields: MessageSend) -> Message:
    # The hot path: one lean read of what the checks need, one INSERT … RETURNING.
    chat = await find_chat_to_send(session, scope, chat_id)
    if chat.profile_status != "active":
        raise APIError(
            422,
            f"The profile is {chat.profile_status}: reconnect the Instagram account "
            "(dmrelay profiles add … with a fresh access token) before sending",
        )
    check_window(chat.last_inbound_at, fields.tag, datetime.now(UTC))
    message = await session.scalar(
        insert(Message)
        .values(
            chat_id=chat.id,
            profile_id=chat.profile_id,
            direction="outbound",
            status="pending",
            body=fields.body,
            tag=fields.tag,
            attachment=fields.attachment,
            reply_to_external_id=fields.reply_to_external_id,
        )
        .returning(Message)
    )
    _queue_delivery(session, message)
    return message


def _queue_delivery(session: AsyncSession, message: Message) -> None:
    after_commit(session, partial(request_delivery, chat_id=message.chat_id))


async def retry(session: AsyncSession, scope: Scope, message_id: str) -> Message:
    """Queue a failed outbound message again, with its attempts reset."""
    message = await get_message(session, scope, message_id)
    if message.direction != "outbound" or message.status != "failed":
        raise APIError(
            422,
            f"Only a failed outbound message can be retried; this one is "
            f"{message.direction} and {message.status}",
            [{"field": "status", "message": message.status}],
        )
    message.status = "pending"
    message.attempts = 0
    message.error_message = None
    message.error_details = None
    message.claimed_until = None
    message.next_attempt_at = func.now()
    await session.flush()
    await session.refresh(message)
    _queue_delivery(session, message)
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
    serial = ids.decode(ids.Kind.MESSAGE, message_id)
    # Meta's mid never decodes as ours: only the canonical encoding of a serial does.
    match = Message.id == serial if serial is not None else Message.external_id == message_id
    message = await session.scalar(
        visible(select(Message).join(Profile, Profile.id == Message.profile_id), scope)
        .where(match)
        .limit(1)
    )
    if message is None:
        raise NotFound("Message")
    return message
