"""Customer events: recorded in the transaction of the change they describe, so that an event
exists exactly when its change does. Sending them to customers is a separate concern.

Recording notes an event in its session; the lot is written by one statement before commit, or
earlier by `write_recorded` (an ORM object apiece, flushed one by one, would cost more than the
rest of applying an inbound message)."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.chats.models import Chat
from app.core import ids
from app.core.db import before_commit
from app.events import repository
from app.events.models import CustomerEventType
from app.messages.models import Message, MessageRow
from app.messages.schemas import MessageOut
from app.profiles.models import Profile

# Where a session keeps the events recorded and not written yet (its `info`).
_RECORDED = "customer_events"


def record(
    session: AsyncSession,
    profile_id: int,
    type: CustomerEventType,
    data: dict[str, Any],
    occurred_at: datetime | None,
    message_id: int | None = None,
) -> None:
    """Note an event; `message_id` names the message whose content `data` copies, if any."""
    event = {
        "profile_id": profile_id,
        "type": type,
        "data": data,
        "occurred_at": occurred_at,
        "message_id": message_id,
    }
    session.info.setdefault(_RECORDED, []).append(event)
    before_commit(session, write_recorded)


def record_message(
    session: AsyncSession,
    profile_id: int,
    type: CustomerEventType,
    message: Message | MessageRow,
    occurred_at: datetime | None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Note an event about a message: its data carries the message (and `extra`), linked to
    it so that the content can be erased here too should the message be unsent."""
    data = {**message_data(message), **(extra or {})}
    record(session, profile_id, type, data, occurred_at, message_id=message.id)


async def write_message_event(
    connection: AsyncConnection,
    type: CustomerEventType,
    message: MessageRow,
    occurred_at: datetime | None,
) -> None:
    """Store an event about a message at once, on a connection whose transaction holds the
    change it reports (the send loop's outcomes, app/messages/repository.py)."""
    event = {
        "profile_id": message.profile_id,
        "type": type,
        "data": message_data(message),
        "occurred_at": occurred_at,
        "message_id": message.id,
    }
    await repository.insert_all(connection, [event])


async def write_recorded(session: AsyncSession) -> None:
    """Store the events recorded in this session and not written yet, in recording order."""
    recorded = session.info.pop(_RECORDED, None)
    if recorded:
        await repository.insert_all(session, recorded)


def discard_recorded(session: AsyncSession) -> None:
    """Forget the events recorded and not written: their change was rolled back."""
    session.info.pop(_RECORDED, None)


def message_data(message: Message | MessageRow) -> dict[str, Any]:
    return {"message": MessageOut.of(message).model_dump(mode="json")}


def chat_data(chat: Chat) -> dict[str, Any]:
    """A chat as Postproxy's webhook payloads carry it (WebhookChatData)."""
    return {
        "id": ids.encode(ids.Kind.CHAT, chat.id),
        "profile_id": ids.encode(ids.Kind.PROFILE, chat.profile_id),
        "platform": "instagram",
        "external_placement_id": None,
        "group": False,
        "participant_external_id": chat.participant_external_id,
        "participant_username": chat.participant_username,
        "participant_name": chat.participant_name,
        "last_inbound_at": _iso(chat.last_inbound_at),
        "last_outbound_at": _iso(chat.last_outbound_at),
        "last_message_at": _iso(chat.last_message_at),
    }


def profile_data(profile: Profile | Row[Any], origin: str | None = None) -> dict[str, Any]:
    """A profile as Postproxy's profile.connected / profile.disconnected events carry it
    (ProfileEventData); `origin` on a disconnection: "user" or "automated"."""
    return {
        "id": ids.encode(ids.Kind.PROFILE, profile.id),
        "name": profile.name or profile.username or profile.platform_id,
        "platform": profile.platform,
        "profile_group_id": ids.encode(ids.Kind.PROFILE_GROUP, profile.profile_group_id),
        "status": profile.status,
        "uid": profile.platform_id,
        "platform_id": profile.platform_id,
        "username": profile.username,
        "origin": origin,
    }


def record_profile(
    session: AsyncSession,
    type: CustomerEventType,
    profile: Profile,
    occurred_at: datetime | None = None,
    origin: str | None = None,
) -> None:
    """Note a profile.connected or profile.disconnected event, in the session's transaction
    (the one that connects or disconnects it)."""
    record(session, profile.id, type, profile_data(profile, origin), occurred_at)


def profile_event(
    profile: Profile | Row[Any], type: CustomerEventType, origin: str | None = None
) -> dict[str, Any]:
    """A profile event's column values, for a change made by a statement (no session):
    `origin` says who disconnected it, "user" (the API) or "automated" (Meta refused its
    token)."""
    return {
        "profile_id": profile.id,
        "type": type,
        "data": profile_data(profile, origin),
        "occurred_at": datetime.now(UTC),
        "message_id": None,
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
