"""Every query of chat syncs, and the import of a conversation's messages."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.chat_syncs.models import OPEN, ChatSync, ChatSyncStatus
from app.chats import repository as chats
from app.chats.models import Chat
from app.core.pagination import PageParams, fetch_page
from app.inbound import repository as inbound
from app.messages.models import MessageRow


async def start(
    session: AsyncSession, profile_id: int, trigger: str, backfill_from: datetime | None
) -> ChatSync | None:
    """A new pending sync; None if the profile has one open (the unique index decides)."""
    return await session.scalar(
        insert(ChatSync)
        .values(profile_id=profile_id, trigger=trigger, backfill_from=backfill_from)
        .on_conflict_do_nothing(
            index_elements=["profile_id"], index_where=text("status IN ('pending', 'running')")
        )
        .returning(ChatSync)
    )


async def open_for(session: AsyncSession, profile_id: int) -> ChatSync | None:
    return await session.scalar(
        select(ChatSync).where(ChatSync.profile_id == profile_id, ChatSync.status.in_(OPEN))
    )


async def get(session: AsyncSession, profile_id: int, sync_id: int) -> ChatSync | None:
    return await session.scalar(
        select(ChatSync).where(ChatSync.id == sync_id, ChatSync.profile_id == profile_id)
    )


async def page(
    session: AsyncSession,
    profile_id: int,
    params: PageParams,
    trigger: str | None,
    status: str | None,
) -> tuple[list[ChatSync], int]:
    conditions: list[ColumnElement[bool]] = [ChatSync.profile_id == profile_id]
    if trigger is not None:
        conditions.append(ChatSync.trigger == trigger)
    if status is not None:
        conditions.append(ChatSync.status == status)
    return await fetch_page(session, ChatSync, conditions, [ChatSync.id.desc()], params, None)


async def claim(session: AsyncSession, sync_id: int) -> ChatSync | None:
    """Mark an open sync running (again, if its last worker died); None if it is over."""
    return await session.scalar(
        update(ChatSync)
        .where(ChatSync.id == sync_id, ChatSync.status.in_(OPEN))
        .values(
            status=ChatSyncStatus.RUNNING,
            started_at=func.coalesce(ChatSync.started_at, func.now()),
        )
        .returning(ChatSync)
    )


async def progress(session: AsyncSession, sync_id: int, **values: Any) -> None:
    await session.execute(update(ChatSync).where(ChatSync.id == sync_id).values(**values))


async def finish(session: AsyncSession, sync_id: int, error: str | None) -> None:
    status = ChatSyncStatus.COMPLETED if error is None else ChatSyncStatus.FAILED
    await session.execute(
        update(ChatSync)
        .where(ChatSync.id == sync_id)
        .values(status=status, error=error, completed_at=func.now())
    )


async def import_conversation(
    session: AsyncSession,
    profile_id: int,
    participant: dict[str, str | None],
    conversation_id: str,
    rows: Sequence[dict[str, Any]],
) -> list[MessageRow]:
    """The conversation's chat (found or created) and the messages it lacks, stored as
    inbound's are (`app/inbound/repository.py:insert_messages`); the new ones. Messages are
    unique on (profile, Meta's id): importing again adds nothing."""
    given: dict[str, Any] = {"external_conversation_id": conversation_id}
    if participant.get("username"):
        given["participant_username"] = participant["username"]
    chat, _ = await chats.upsert(session, profile_id, str(participant["id"]), given)
    if not rows:
        return []
    stored = await inbound.insert_messages(
        session, [{**row, "chat_id": chat.id, "profile_id": profile_id} for row in rows]
    )

    def latest(direction: str | None) -> datetime | None:
        times = [r["external_posted_at"] for r in rows if direction in (None, r["direction"])]
        return max(times) if times else None

    # Times only move forward (GREATEST skips NULLs), as inbound's do.
    await session.execute(
        update(Chat)
        .where(Chat.id == chat.id)
        .values(
            last_inbound_at=func.greatest(Chat.last_inbound_at, latest("inbound")),
            last_outbound_at=func.greatest(Chat.last_outbound_at, latest("outbound")),
            last_message_at=func.greatest(Chat.last_message_at, latest(None)),
        )
    )
    return [message for message in stored if message is not None]


async def stale(session: AsyncSession, quiet_since: datetime) -> list[int]:
    """Open syncs with no progress since `quiet_since`: their job was lost, or its worker."""
    found = await session.scalars(
        select(ChatSync.id).where(ChatSync.status.in_(OPEN), ChatSync.updated_at < quiet_since)
    )
    return list(found.all())
