"""Sending and reading messages: the rules; the statements are in repository.py."""

from datetime import datetime
from functools import partial
from typing import NoReturn

from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys.auth import Scope
from app.chats import service as chats
from app.chats import window
from app.chats.models import Chat
from app.chats.schemas import ChatCreate
from app.core import ids, tracing
from app.core.db import after_commit, driver_connection
from app.core.errors import APIError, NotFound
from app.core.metrics import MESSAGES_ACCEPTED
from app.core.pagination import PageParams
from app.messages import repository
from app.messages.models import Direction, Message, MessageRow, MessageStatus
from app.messages.repository import Acceptance, Driver
from app.messages.schemas import MessageSend, RecipientMessageSend
from app.messages.sender import request_send
from app.messages.throttle import unpause
from app.profiles.models import ProfileStatus
from app.profiles.service import get_profile


def check_window(last_inbound_at: datetime | None, tag: str | None, now: datetime) -> None:
    """Refuse a reply outside Meta's messaging window (app/chats/window.py)."""
    reason = window.closed_reason(last_inbound_at, now, tag)
    if reason is not None:
        # A fact about the chat, not about a field of the request: `errors` stays empty.
        raise APIError(422, reason)


async def send(connection: Driver, scope: Scope, chat_id: str, fields: MessageSend) -> MessageRow:
    """Accept a message for sending, in one round trip (the hot path): the chat the key may
    see, its profile active, its window open."""
    chat = ids.lookup(ids.Kind.CHAT, chat_id)
    if chat is None:
        raise NotFound("Chat")
    accepted = await repository.raw_accept(
        connection,
        chat,
        scope.profile_group_id,
        fields.body,
        fields.tag,
        fields.attachment,
        fields.reply_to_external_id,
        window.length(fields.tag),
        fields.interactive,
        # The request's trace, for the worker's send to join; None while tracing is off.
        traceparent := tracing.traceparent(),
    )
    if accepted is None:
        raise NotFound("Chat")
    if accepted.message_id is None or accepted.created_at is None:
        _refuse(accepted, fields.tag)
    MESSAGES_ACCEPTED.inc()
    if traceparent is not None:
        tracing.annotate(
            message=accepted.message_id, chat=accepted.chat_id, profile=accepted.profile_id
        )
    # The row as the statement inserted it, as a MessageRow: an ORM Message, which nothing
    # here would track, costs several times as much to build and to read (its answer's).
    created_at = accepted.created_at
    return MessageRow(
        id=accepted.message_id,
        chat_id=accepted.chat_id,
        profile_id=accepted.profile_id,
        # Plain strings, as loaded messages hold: an enum member costs its answer's
        # serialization a fallback.
        direction=Direction.OUTBOUND.value,
        status=MessageStatus.PENDING.value,
        body=fields.body,
        tag=fields.tag,
        attachment=fields.attachment,
        reply_to_external_id=fields.reply_to_external_id,
        interactive=fields.interactive,
        traceparent=traceparent,
        external_id=None,
        error_message=None,
        error_details=None,
        platform_data=None,
        attempts=0,
        claimed_until=None,
        next_attempt_at=None,
        external_posted_at=None,
        external_read_at=None,
        external_edited_at=None,
        external_deleted_at=None,
        attachments=None,
        reactions=None,
        tapped_action=None,
        story_reply=None,
        referral=None,
        is_unsupported=False,
        # COALESCE(external_posted_at, created_at); both times are the statement's now().
        sort_at=created_at,
        created_at=created_at,
        updated_at=created_at,
    )


async def send_to_recipient(
    session: AsyncSession, scope: Scope, profile_id: str, fields: RecipientMessageSend
) -> MessageRow:
    """The one-call send: the profile's chat with the recipient, found or created, then the
    message accepted in it as by `send_in_session`. A refused send rolls the new chat back
    with it."""
    profile = await get_profile(session, scope, profile_id)
    chat, _ = await chats.find_or_create(
        session, profile, ChatCreate(participant_external_id=fields.recipient_id)
    )
    chat_id = ids.encode(ids.Kind.CHAT, chat.id)
    return await send_in_session(session, scope, chat_id, fields)


async def send_in_session(
    session: AsyncSession, scope: Scope, chat_id: str, fields: MessageSend
) -> MessageRow:
    """Accept a send in the session's unit of work (`send`, on its own connection, so it
    commits or rolls back with the rest) and have its chat sent once that commits: how the
    REST routes and the MCP tools send. (The express lane has no session: it queues itself.)"""
    message = await send(await driver_connection(session), scope, chat_id, fields)
    queue_send(session, message.chat_id)
    return message


def _refuse(accepted: Acceptance, tag: str | None) -> NoReturn:
    """Why the send's conditions kept the message out."""
    if accepted.profile_status != ProfileStatus.ACTIVE:
        raise APIError(
            422,
            f"The profile is {accepted.profile_status}: reconnect the Instagram account "
            "(POST /api/profile_groups/{id}/initialize_connection, or dmrelay profiles add … "
            "with a fresh access token) before sending",
        )
    check_window(accepted.last_inbound_at, tag, accepted.now)
    raise RuntimeError(f"send to chat {accepted.chat_id} refused for no known reason")


def queue_send(session: AsyncSession, chat_id: int) -> None:
    """Have a worker send the chat's messages once the session's transaction commits."""
    after_commit(session, partial(request_send, chat_id=chat_id))


async def release_held(session: AsyncSession, profile_id: int) -> None:
    """Send a reconnected profile's held messages now (the one implementation, for the
    connect flow and `dmrelay profiles add`): their waits end, and once committed its pause
    ends, then their chats are queued. In that order: a job that met the pause would hold
    its chat back again. Sends keep their order and are never sent twice: the send loop's
    lease and claims (app/messages/sender.py) decide, a released message is only due again.
    A send that met the pause just before this commit and is held back after it is not held
    (`repository.give_back` reads the profile's status under its row lock)."""
    chats = await repository.release_held(session, profile_id)
    after_commit(session, partial(unpause, profile_id=profile_id))
    for chat_id in sorted(chats):
        queue_send(session, chat_id)


async def edit(session: AsyncSession, scope: Scope, message_id: str) -> NoReturn:
    """Instagram's Send API cannot change a message once sent: said plainly, once the message
    is known to be one the key sees."""
    await get_message(session, scope, message_id)
    raise APIError(
        422,
        "Instagram does not let a business edit a message it sent: send a new message "
        "(a customer's own edits arrive as external_edited_at)",
    )


async def retry(session: AsyncSession, scope: Scope, message_id: str) -> Message:
    """Queue a failed outbound message again, with its attempts reset."""
    message = await get_message(session, scope, message_id)
    if message.direction != Direction.OUTBOUND or message.status != MessageStatus.FAILED:
        raise APIError(
            422,
            f"Only a failed outbound message can be retried; this one is "
            f"{message.direction} and {message.status}",
        )
    await repository.reset_for_retry(session, message)
    queue_send(session, message.chat_id)
    return message


async def list_messages(
    session: AsyncSession,
    chat: Chat,
    page: PageParams,
    direction: str | None,
    status: str | None,
) -> tuple[list[Message], int]:
    filtered = direction is not None or status is not None
    # Unfiltered, the total is the count the chat keeps.
    total = None if filtered else await repository.message_count(session, chat.id)
    return await repository.page_of_chat(
        session, chat.id, page, direction=direction, status=status, total=total
    )


async def get_message(session: AsyncSession, scope: Scope, message_id: str) -> Message:
    """A message by our public id or by Meta's message id (mid)."""
    # Meta's mid never decodes as ours: only the canonical encoding of a serial does.
    serial_or_mid = ids.lookup(ids.Kind.MESSAGE, message_id)
    message = (
        await repository.find(session, scope, serial_or_mid) if serial_or_mid is not None else None
    )
    if message is None:
        raise NotFound("Message")
    return message
