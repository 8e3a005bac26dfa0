from datetime import datetime

from sqlalchemy import ColumnElement, func, literal_column, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys.auth import Scope
from app.chats.models import Chat
from app.chats.schemas import ChatCreate
from app.core import ids
from app.core.errors import NotFound
from app.core.pagination import PageParams, fetch_page
from app.profiles.models import Profile
from app.profiles.service import visible


async def list_chats(
    session: AsyncSession,
    profile: Profile,
    page: PageParams,
    before: datetime | None,
    after: datetime | None,
) -> tuple[list[Chat], int]:
    conditions = [Chat.profile_id == profile.id]
    if before is not None:
        conditions.append(Chat.last_message_at < before)
    if after is not None:
        conditions.append(Chat.last_message_at > after)
    filtered = before is not None or after is not None
    order = [Chat.last_message_at.desc().nulls_last(), Chat.id.desc()]
    kept_total = None if filtered else profile.chat_count
    return await fetch_page(session, Chat, conditions, order, page, kept_total)


async def find_or_create(
    session: AsyncSession, profile: Profile, fields: ChatCreate
) -> tuple[Chat, bool]:
    """The chat with this participant, created if new; given fields overwrite stored ones."""
    given = fields.model_dump(exclude_unset=True, exclude={"participant_external_id"})
    statement = (
        insert(Chat)
        .values(
            profile_id=profile.id, participant_external_id=fields.participant_external_id, **given
        )
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


def _chat_matching(chat_id: str) -> ColumnElement[bool]:
    """Our public id or, failing that, Meta's conversation id (which never decodes as ours:
    only the canonical encoding of a chat serial does)."""
    match ids.lookup(ids.Kind.CHAT, chat_id):
        case int(serial):
            return Chat.id == serial
        case str(conversation_id):
            return Chat.external_conversation_id == conversation_id
        case None:
            raise NotFound("Chat")


async def find_chat(session: AsyncSession, scope: Scope, chat_id: str) -> tuple[Chat, Profile]:
    """A chat, with its profile, by our public id or by Meta's conversation id."""
    row = (
        await session.execute(
            visible(select(Chat, Profile).join(Profile, Profile.id == Chat.profile_id), scope)
            .where(_chat_matching(chat_id))
            .limit(1)
        )
    ).first()
    if row is None:
        raise NotFound("Chat")
    return row[0], row[1]
