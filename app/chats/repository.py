"""Every query on chats (their participant columns excepted: app/participants/repository.py)."""

from datetime import datetime
from typing import Any

from sqlalchemy import func, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningInsert

from app.api_keys.auth import Scope
from app.chats.models import Chat
from app.core.pagination import PageParams, fetch_page
from app.profiles.models import Profile
from app.profiles.repository import visible


async def list_page(
    session: AsyncSession,
    profile_id: int,
    page: PageParams,
    active_after: datetime | None,
    active_before: datetime | None,
    kept_total: int | None,
    archived: bool = False,
) -> tuple[list[Chat], int]:
    """A page of the profile's chats (archived ones, or the others), newest activity first,
    and the total they are a page of (`kept_total` if given, else counted)."""
    # `=`, not IS: the list index can serve only an equality.
    conditions = [Chat.profile_id == profile_id, Chat.archived == archived]
    if active_before is not None:
        conditions.append(Chat.last_message_at < active_before)
    if active_after is not None:
        conditions.append(Chat.last_message_at > active_after)
    order = [Chat.last_message_at.desc().nulls_last(), Chat.id.desc()]
    return await fetch_page(session, Chat, conditions, order, page, kept_total)


async def upsert(
    session: AsyncSession, profile_id: int, participant_external_id: str, given: dict[str, Any]
) -> tuple[Chat, bool]:
    """The chat with this participant, created if new, with `given` columns set; and whether
    it was created."""
    statement: ReturningInsert[Chat, bool] = (
        insert(Chat)
        .values(profile_id=profile_id, participant_external_id=participant_external_id, **given)
        .on_conflict_do_update(
            index_elements=["profile_id", "participant_external_id"],
            # Always an update (never DO NOTHING), so the existing row is returned.
            set_={**given, "updated_at": func.now()},
        )
        # xmax is 0 only on a row this statement inserted.
        .returning(Chat, literal_column("xmax = 0").label("created"))
    )
    chat, created = (await session.execute(statement)).one()
    return chat, created


async def set_archived(session: AsyncSession, chat: Chat, archived: bool) -> None:
    """Archive or unarchive the chat; its loaded columns are refreshed."""
    await session.execute(
        update(Chat).where(Chat.id == chat.id).values(archived=archived, updated_at=func.now())
    )
    await session.refresh(chat)


async def get_visible(
    session: AsyncSession, scope: Scope, key: int | str
) -> tuple[Chat, Profile] | None:
    """The chat with this serial (an int) or Meta's conversation id (a str), with its profile,
    if the key may see it."""
    matching = Chat.id == key if isinstance(key, int) else Chat.external_conversation_id == key
    row = (
        await session.execute(
            visible(select(Chat, Profile).join(Profile, Profile.id == Chat.profile_id), scope)
            .where(matching)
            .limit(1)
        )
    ).first()
    return None if row is None else (row[0], row[1])
