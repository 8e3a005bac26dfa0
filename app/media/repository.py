"""Every query of media: the media deletions, the attachments of a message, and the
profiles' reusable attachments."""

import json
from datetime import timedelta
from typing import Any

import asyncpg
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


# Reusable attachments, on the worker's driver pool (raw asyncpg: part of a send).


async def raw_attachment_id(db: asyncpg.Pool, profile_id: int, content_key: str) -> str | None:
    """Meta's id for a file the profile has uploaded, if it has."""
    found: str | None = await db.fetchval(
        "SELECT attachment_id FROM reusable_attachments WHERE profile_id = $1 AND content_key = $2",
        profile_id,
        content_key,
    )
    return found


async def raw_keep_attachment_id(
    db: asyncpg.Pool, profile_id: int, content_key: str, attachment_id: str
) -> None:
    await db.execute(
        "INSERT INTO reusable_attachments (profile_id, content_key, attachment_id)"
        " VALUES ($1, $2, $3) ON CONFLICT (profile_id, content_key)"
        " DO UPDATE SET attachment_id = EXCLUDED.attachment_id, created_at = now()",
        profile_id,
        content_key,
        attachment_id,
    )


async def raw_forget_attachment_id(
    db: asyncpg.Pool, profile_id: int, content_key: str, attachment_id: str
) -> None:
    """Forget an id Meta no longer takes (unless another upload replaced it meanwhile)."""
    await db.execute(
        "DELETE FROM reusable_attachments"
        " WHERE profile_id = $1 AND content_key = $2 AND attachment_id = $3",
        profile_id,
        content_key,
        attachment_id,
    )


async def raw_set_attachment(db: asyncpg.Pool, message_id: int, changes: dict[str, Any]) -> None:
    """Merge changes into an outbound message's attachment (its status, Meta's id)."""
    await db.execute(
        "UPDATE messages SET attachment = attachment || $2::jsonb, updated_at = now()"
        " WHERE id = $1 AND attachment IS NOT NULL",
        message_id,
        json.dumps(changes),
    )
