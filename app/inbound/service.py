"""Applying Meta's webhook events to chats and messages.

Every function here runs inside the transaction of one chat's event run (see processing.py),
which holds that chat's lock, and records the matching customer event alongside its change.
An event about a message that is not stored yet answers WAITING: it is applied once the
message arrives. Changes that arrive late never overwrite newer state: times only move
forward, an edit or reaction older than the stored one is dropped, and an unsend is final.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.chats.models import Chat
from app.core.db import enqueue_after_commit
from app.core.settings import Settings
from app.events import service as events
from app.inbound.content import message_columns
from app.inbound.parsing import Event
from app.media import service as media
from app.messages.models import UNDELIVERED, Message
from app.profiles.models import Profile

# What Meta's terms require erasing when the sender unsends a message.
ERASED_ON_UNSEND = {
    "body": None,
    "attachment": None,
    "attachments": None,
    "platform_data": None,
    "story_reply": None,
    "tapped_action": None,
    "referral": None,
    "reactions": None,
}


class Outcome(StrEnum):
    APPLIED = "applied"
    WAITING = "waiting"  # the message it is about is not stored yet
    IGNORED = "ignored"  # nothing to do (a duplicate of something already stored)


@dataclass
class Context:
    session: AsyncSession
    settings: Settings
    profile: Profile
    chat: Chat


async def chat_for(session: AsyncSession, profile: Profile, participant_id: str) -> Chat:
    """The participant's chat, created on their first event."""
    await session.execute(
        insert(Chat)
        .values(profile_id=profile.id, participant_external_id=participant_id)
        .on_conflict_do_nothing(index_elements=["profile_id", "participant_external_id"])
    )
    return await session.scalar(
        select(Chat).where(
            Chat.profile_id == profile.id, Chat.participant_external_id == participant_id
        )
    )


async def apply(context: Context, event: Event) -> Outcome:
    return await APPLIERS[event.kind](context, event)


async def _apply_message(context: Context, event: Event) -> Outcome:
    """An inbound message or postback: every kind opens the 24-hour window, story mentions
    and story replies included."""
    message = await _insert_message(
        context, event, direction="inbound", status="received", **_columns(context, event)
    )
    if message is None:
        return Outcome.IGNORED
    _touch_chat(context.chat, inbound_at=event.occurred_at)
    events.record(
        context.session,
        context.profile.id,
        "message.received",
        events.message_data(message),
        event.occurred_at,
    )
    if message.referral is not None:
        _record_referral(context, message.referral, event.occurred_at)
    return Outcome.APPLIED


async def apply_echo(context: Context, event: Event) -> Outcome:
    """A message the business sent, as Meta echoes it back.

    1. A row with this mid is ours (the send call returned first): mark it published.
    2. Else a row of this chat being sent right now (claimed, mid unknown) with the same
       content is ours too, the echo having beaten the send call's answer: the oldest such
       row takes the mid.
    3. Else it was sent from the Instagram app or another inbox: store it as published.
    Never a second row for one mid, whatever the arrival order.
    """
    session = context.session
    ours = await session.scalar(
        select(Message)
        .where(Message.profile_id == context.profile.id, Message.external_id == event.mid)
        .with_for_update()
    )
    if ours is None:
        ours = await _claimed_match(context, event)
        if ours is not None:
            ours.external_id = event.mid
    if ours is not None:
        if ours.status in UNDELIVERED:
            ours.status = "published"
            ours.external_posted_at = event.occurred_at
            ours.claimed_until = None
        _touch_chat(context.chat, outbound_at=event.occurred_at)
        return Outcome.APPLIED
    message = await _insert_message(
        context, event, direction="outbound", status="published", **_columns(context, event)
    )
    if message is None:
        return Outcome.IGNORED
    _touch_chat(context.chat, outbound_at=event.occurred_at)
    events.record(
        session, context.profile.id, "message.sent", events.message_data(message), event.occurred_at
    )
    return Outcome.APPLIED


async def _claimed_match(context: Context, event: Event) -> Message | None:
    echo = event.item["message"]
    conditions = [
        Message.chat_id == context.chat.id,
        Message.direction == "outbound",
        Message.external_id.is_(None),
        Message.status.in_(UNDELIVERED),
        Message.claimed_until > func.now(),
    ]
    attachments = echo.get("attachments")
    if isinstance(attachments, list) and attachments and isinstance(attachments[0], dict):
        conditions.append(Message.attachment["type"].astext == str(attachments[0].get("type")))
    else:
        conditions.append(Message.body == echo.get("text"))
    return await context.session.scalar(
        select(Message).where(*conditions).order_by(Message.id).limit(1).with_for_update()
    )


async def _apply_delete(context: Context, event: Event) -> Outcome:
    message = await _target(context, event)
    if message is None:
        return Outcome.WAITING
    if message.external_deleted_at is not None:
        return Outcome.IGNORED
    stored_media = media.stored_keys(message.attachments)
    for column, value in ERASED_ON_UNSEND.items():
        setattr(message, column, value)
    message.external_deleted_at = event.occurred_at
    if stored_media:
        enqueue_after_commit(context.session, "delete_media", stored_media)
    await _record_message_event(context, "message.deleted", message, event)
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
    await _record_message_event(context, "message.edited", message, event)
    return Outcome.APPLIED


async def _apply_read(context: Context, event: Event) -> Outcome:
    message = await _target(context, event)
    if message is None:
        return Outcome.WAITING
    if message.external_read_at is not None and message.external_read_at >= event.occurred_at:
        return Outcome.IGNORED
    message.external_read_at = event.occurred_at
    await _record_message_event(context, "message.read", message, event)
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
    events.record(
        context.session,
        context.profile.id,
        "reaction.received",
        {
            **events.message_data(message),
            "sender_external_id": sender,
            "action": action,
            "reaction": state["reaction"],
            "emoji": state["emoji"],
            "occurred_at": state["at"],
        },
        event.occurred_at,
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


def _record_referral(context: Context, referral: dict[str, Any], occurred_at: datetime) -> None:
    events.record(
        context.session,
        context.profile.id,
        "referral.received",
        {
            "chat": events.chat_data(context.chat),
            "ref": referral.get("ref"),
            "source": referral.get("source"),
            "type": referral.get("type"),
            "occurred_at": occurred_at.isoformat(),
            "referral": referral,
        },
        occurred_at,
    )


def _columns(context: Context, event: Event) -> dict[str, Any]:
    return message_columns(event.item, context.settings)


async def _insert_message(context: Context, event: Event, **values: Any) -> Message | None:
    """Store a message Meta told us about; None if its mid is stored already."""
    message = await context.session.scalar(
        insert(Message)
        .values(
            chat_id=context.chat.id,
            profile_id=context.profile.id,
            external_id=event.mid,
            external_posted_at=event.occurred_at,
            **values,
        )
        .on_conflict_do_nothing(index_elements=["profile_id", "external_id"])
        .returning(Message)
    )
    if message is not None:
        media.mirror_after_commit(context.session, message, context.settings)
    return message


async def _target(context: Context, event: Event) -> Message | None:
    """The stored message an event is about."""
    return await context.session.scalar(
        select(Message)
        .where(Message.profile_id == context.profile.id, Message.external_id == event.mid)
        .with_for_update()
    )


async def _record_message_event(
    context: Context, type: events.EventType, message: Message, event: Event
) -> None:
    await context.session.flush()
    events.record(
        context.session, context.profile.id, type, events.message_data(message), event.occurred_at
    )


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


APPLIERS = {
    "message": _apply_message,
    "postback": _apply_message,
    "echo": apply_echo,
    "delete": _apply_delete,
    "edit": _apply_edit,
    "read": _apply_read,
    "reaction": _apply_reaction,
    "referral": _apply_referral,
}
