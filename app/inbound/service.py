"""The rules of applying Meta's webhook events: an applier per event kind (APPLIERS), and new
messages and postbacks stored many at a time (apply_messages).

Every applier runs inside the transaction that applies its chat's events (apply.py), which
holds that chat's lock, and records the matching customer event alongside its change
(app/events/service.py, written just before commit). An event about a message that is not
stored yet answers WAITING: it is applied once the message arrives. Changes that arrive late
never overwrite newer state: times only move forward, an edit or reaction older than the
stored one is dropped, and an unsend is final.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.chats.models import Chat
from app.core import tracing
from app.core.settings import Settings
from app.events import service as events
from app.events.models import CustomerEventType
from app.inbound import erasure, repository
from app.inbound.content import message_columns
from app.inbound.models import EventKind, Outcome
from app.inbound.parsing import Event
from app.media import service as media
from app.messages import repository as messages_repository
from app.messages.models import Direction, Message, MessageRow, MessageStatus

# Kinds stored many at a time (apply_messages): storing one reads nothing first.
BULK_KINDS = frozenset({EventKind.MESSAGE, EventKind.POSTBACK})


@dataclass
class Context:
    """The chat an event is applied to, in the transaction that holds its lock."""

    session: AsyncSession
    settings: Settings
    profile_id: int
    chat: Chat


class NewMessage(TypedDict):
    """How a message Meta told us about is stored."""

    direction: str
    status: str


async def apply(context: Context, event: Event) -> Outcome:
    """Apply one event of a kind not in BULK_KINDS (those go through apply_messages)."""
    return await APPLIERS[event.kind](context, event)


async def apply_messages(
    session: AsyncSession, pending: list[tuple[Context, Event]]
) -> list[Outcome]:
    """Inbound messages and postbacks, of any chats, stored by one statement: every kind
    opens the 24-hour window, story mentions and story replies included."""
    received: NewMessage = {"direction": Direction.INBOUND, "status": MessageStatus.RECEIVED}
    messages = await _insert_messages(
        session, [(context, event, received) for context, event in pending]
    )
    return [
        _received(context, event, message)
        for (context, event), message in zip(pending, messages, strict=True)
    ]


def _received(context: Context, event: Event, message: MessageRow | None) -> Outcome:
    if message is None:
        return Outcome.IGNORED
    _touch_chat(context.chat, inbound_at=event.occurred_at)
    if context.chat.archived:
        context.chat.archived = False  # the participant wrote: the chat is back in lists
    events.record_message(
        context.session,
        context.profile_id,
        CustomerEventType.MESSAGE_RECEIVED,
        message,
        event.occurred_at,
    )
    if message.referral is not None:
        _record_referral(context, message.referral, event.occurred_at, message.id)
    return Outcome.APPLIED


async def apply_echo(context: Context, event: Event) -> Outcome:
    """A message the business sent, as Meta echoes it back.

    1. A row with this mid is ours (the send call returned first): mark it published.
    2. Else a row of this chat being sent right now (claimed, mid unknown) with the same
       content is ours too, the echo having beaten the send call's answer, if it is the
       only such row: content (text, or an attachment's type alone, as echoes carry Meta's
       copy of the file) can be shared, and a wrong pairing would mark a message published
       that Meta never got. With two, the echo is stored on its own, and the send's answer
       merges it into its message (SQL publish_sends, migration 0008).
    3. Else it was sent from the Instagram app or another inbox: store it as published.
    Never a second row for one mid, whatever the arrival order.
    """
    session, mid = context.session, event.mid
    assert mid is not None  # parsing refuses an echo without one
    ours = await session.scalar(
        select(Message)
        .where(Message.profile_id == context.profile_id, Message.external_id == mid)
        .with_for_update()
    )
    if ours is None:
        ours = await _claimed_match(context, event)
    if ours is not None:
        # Published as the send's answer would (Meta's id, no retry or error left), if not
        # yet; and message.delivered. Traced in the inbound batch, linked to the send's trace.
        with tracing.span("dmrelay.echo", links=[ours.traceparent]):
            tracing.annotate(message=ours.id, chat=ours.chat_id, profile=ours.profile_id)
            await messages_repository.confirm_echoed(session, ours, mid, event.occurred_at)
        _touch_chat(context.chat, outbound_at=event.occurred_at)
        return Outcome.APPLIED
    published: NewMessage = {"direction": Direction.OUTBOUND, "status": MessageStatus.PUBLISHED}
    [message] = await _insert_messages(session, [(context, event, published)])
    if message is None:
        return Outcome.IGNORED
    _touch_chat(context.chat, outbound_at=event.occurred_at)
    events.record_message(
        session, context.profile_id, CustomerEventType.MESSAGE_SENT, message, event.occurred_at
    )
    return Outcome.APPLIED


async def _claimed_match(context: Context, event: Event) -> Message | None:
    """The chat's message being sent right now with the echo's content, if only one has it."""
    echo = event.item["message"]
    attachments = echo.get("attachments")
    if isinstance(attachments, list) and attachments and isinstance(attachments[0], dict):
        body, attachment_type = None, str(attachments[0].get("type"))
    else:
        body, attachment_type = echo.get("text"), None
    candidates = await messages_repository.claimed_candidates(
        context.session, context.chat.id, body, attachment_type
    )
    return candidates[0] if len(candidates) == 1 else None


async def _apply_delete(context: Context, event: Event) -> Outcome:
    message = await _target(context, event)
    if message is None:
        return Outcome.WAITING
    if message.external_deleted_at is not None:
        return Outcome.IGNORED
    message.external_deleted_at = event.occurred_at
    await erasure.erase(context.session, message, event.account_id)
    await _record_message_event(context, CustomerEventType.MESSAGE_DELETED, message, event)
    return Outcome.APPLIED


async def _apply_edit(context: Context, event: Event) -> Outcome:
    message = await _target(context, event)
    if message is None:
        return Outcome.WAITING
    stale = message.external_edited_at is not None and message.external_edited_at >= (
        event.occurred_at
    )
    if message.external_deleted_at is not None or stale:
        return Outcome.IGNORED
    text = event.item["message_edit"].get("text")
    message.body = text if isinstance(text, str) else None
    message.external_edited_at = event.occurred_at
    await _record_message_event(context, CustomerEventType.MESSAGE_EDITED, message, event)
    return Outcome.APPLIED


async def _apply_read(context: Context, event: Event) -> Outcome:
    message = await _target(context, event)
    if message is None:
        return Outcome.WAITING
    if message.external_read_at is not None and message.external_read_at >= event.occurred_at:
        return Outcome.IGNORED
    message.external_read_at = event.occurred_at
    await _record_message_event(context, CustomerEventType.MESSAGE_READ, message, event)
    return Outcome.APPLIED


async def _apply_reaction(context: Context, event: Event) -> Outcome:
    message = await _target(context, event)
    if message is None:
        return Outcome.WAITING
    sender = event.participant_id
    current = (message.reactions or {}).get(sender)
    if message.external_deleted_at is not None or (
        current is not None and datetime.fromisoformat(current["at"]) >= event.occurred_at
    ):
        return Outcome.IGNORED
    reaction = event.item["reaction"]
    action = "unreact" if reaction.get("action") == "unreact" else "react"
    state = {
        "action": action,
        "reaction": reaction.get("reaction") if action == "react" else None,
        "emoji": reaction.get("emoji") if action == "react" else None,
        "at": event.occurred_at.isoformat(),
    }
    # A new dict, so the ORM sees the change.
    message.reactions = {**(message.reactions or {}), sender: state}
    await context.session.flush()
    events.record_message(
        context.session,
        context.profile_id,
        CustomerEventType.REACTION_RECEIVED,
        message,
        event.occurred_at,
        {
            "sender_external_id": sender,
            "action": action,
            "reaction": state["reaction"],
            "emoji": state["emoji"],
            "occurred_at": state["at"],
        },
    )
    return Outcome.APPLIED


async def _apply_referral(context: Context, event: Event) -> Outcome:
    """An ig.me link or an ad opened an existing thread: no message, but worth telling."""
    referral = event.item["referral"]
    metadata = dict(context.chat.metadata_ or {})
    metadata["referral"] = {**referral, "at": event.occurred_at.isoformat()}
    context.chat.metadata_ = metadata
    _record_referral(context, referral, event.occurred_at)
    return Outcome.APPLIED


def _record_referral(
    context: Context,
    referral: dict[str, Any],
    occurred_at: datetime,
    message_id: int | None = None,
) -> None:
    """`message_id`: the message that carried the referral (an ad's), if one did."""
    events.record(
        context.session,
        context.profile_id,
        CustomerEventType.REFERRAL_RECEIVED,
        {
            "chat": events.chat_data(context.chat),
            "ref": referral.get("ref"),
            "source": referral.get("source"),
            "type": referral.get("type"),
            "occurred_at": occurred_at.isoformat(),
            "referral": referral,
        },
        occurred_at,
        message_id=message_id,
    )


async def _insert_messages(
    session: AsyncSession, pending: list[tuple[Context, Event, NewMessage]]
) -> list[MessageRow | None]:
    """Store messages Meta told us about, in one statement: for each, the message stored, or
    None if its mid is stored already, or earlier in the list. Their media is copied once
    the transaction commits."""
    rows = [
        {
            "chat_id": context.chat.id,
            "profile_id": context.profile_id,
            "external_id": event.mid,
            "external_posted_at": event.occurred_at,
            "is_unsupported": False,  # the column's default, for content that does not say
            **values,
            **message_columns(event.item, context.settings),
        }
        for context, event, values in pending
    ]
    messages = await repository.insert_messages(session, rows)
    for (context, _, _), message in zip(pending, messages, strict=True):
        if message is not None:
            media.mirror_after_commit(session, message, context.settings)
    return messages


async def _target(context: Context, event: Event) -> Message | None:
    """The stored message an event is about."""
    return await repository.message_by_mid(context.session, context.profile_id, event.mid)


async def _record_message_event(
    context: Context, type: CustomerEventType, message: Message, event: Event
) -> None:
    await context.session.flush()
    events.record_message(context.session, context.profile_id, type, message, event.occurred_at)


def _touch_chat(
    chat: Chat, *, inbound_at: datetime | None = None, outbound_at: datetime | None = None
) -> None:
    """Times only move forward, so events applied out of order leave the latest in place."""
    if inbound_at is not None:
        chat.last_inbound_at = _latest(chat.last_inbound_at, inbound_at)
    if outbound_at is not None:
        chat.last_outbound_at = _latest(chat.last_outbound_at, outbound_at)
    chat.last_message_at = _latest(chat.last_message_at, inbound_at or outbound_at)


def _latest(current: datetime | None, candidate: datetime | None) -> datetime | None:
    if current is None or candidate is None:
        return current or candidate
    return max(current, candidate)


APPLIERS: dict[EventKind, Callable[[Context, Event], Awaitable[Outcome]]] = {
    EventKind.ECHO: apply_echo,
    EventKind.DELETE: _apply_delete,
    EventKind.EDIT: _apply_edit,
    EventKind.READ: _apply_read,
    EventKind.REACTION: _apply_reaction,
    EventKind.REFERRAL: _apply_referral,
}
