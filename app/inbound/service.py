"""Applying Meta's webhook events to chats and messages."""

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.chats.models import Chat
from app.messages.models import Message
from app.meta.webhooks import MessagingEvent
from app.profiles.models import Profile


async def apply(session: AsyncSession, events: list[MessagingEvent]) -> int:
    """Store the inbound messages among the events; returns how many were new."""
    stored = 0
    profiles: dict[str, int | None] = {}
    for event in events:
        message = event.message
        if message is None or message.get("is_echo") or not message.get("mid"):
            continue
        if event.account_id not in profiles:
            profiles[event.account_id] = await session.scalar(
                select(Profile.id).where(Profile.platform_id == event.account_id)
            )
        profile_id = profiles[event.account_id]
        if profile_id is None:
            continue
        stored += await _store_inbound(session, profile_id, event, message)
    return stored


async def _store_inbound(
    session: AsyncSession, profile_id: int, event: MessagingEvent, message: dict
) -> int:
    chat_id = await _touch_chat(session, profile_id, event)
    inserted = await session.scalar(
        insert(Message)
        .values(
            chat_id=chat_id,
            profile_id=profile_id,
            direction="inbound",
            status="received",
            body=message.get("text"),
            external_id=str(message["mid"]),
            external_posted_at=event.timestamp,
            platform_data={"webhook": event.raw},
        )
        .on_conflict_do_nothing(index_elements=["profile_id", "external_id"])
        .returning(Message.id)
    )
    return 0 if inserted is None else 1


async def _touch_chat(session: AsyncSession, profile_id: int, event: MessagingEvent) -> int:
    """The participant's chat, created on first contact; times only move forward, so
    events delivered out of order leave the latest ones in place."""
    statement = insert(Chat).values(
        profile_id=profile_id,
        participant_external_id=event.sender_id,
        last_inbound_at=event.timestamp,
        last_message_at=event.timestamp,
    )
    statement = statement.on_conflict_do_update(
        index_elements=["profile_id", "participant_external_id"],
        set_={
            "last_inbound_at": func.greatest(
                Chat.last_inbound_at, statement.excluded.last_inbound_at
            ),
            "last_message_at": func.greatest(
                Chat.last_message_at, statement.excluded.last_message_at
            ),
            "updated_at": func.now(),
        },
    ).returning(Chat.id)
    return (await session.scalars(statement)).one()
