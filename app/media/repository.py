"""Every query of media mirroring: the media deletions, and the attachments of a message."""

from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.media.models import MediaDeletion
from app.messages.models import Message


async def record_deletions(session: AsyncSession, keys: list[str]) -> None:
    await session.execute(
        insert(MediaDeletion).values([{"key": key} for key in keys]).on_conflict_do_nothing()
    )


async def forget_deletions(session: AsyncSession, keys: list[str]) -> None:
    await session.execute(delete(MediaDeletion).where(MediaDeletion.key.in_(keys)))


async def deletions_older_than(session: AsyncSession, age: timedelta, limit: int) -> list[str]:
    """The keys of the oldest deletions recorded more than `age` ago."""
    return list(
        await session.scalars(
            select(MediaDeletion.key)
            .where(MediaDeletion.created_at < func.now() - age)
            .order_by(MediaDeletion.created_at)
            .limit(limit)
        )
    )


async def get_message(session: AsyncSession, message_id: int) -> Message | None:
    return await session.get(Message, message_id)


async def lock_message(session: AsyncSession, message_id: int) -> Message | None:
    """The message, locked (FOR UPDATE) until the transaction ends."""
    return await session.scalar(select(Message).where(Message.id == message_id).with_for_update())
