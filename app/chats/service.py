from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys.auth import Scope
from app.chats import repository
from app.chats.models import Chat
from app.chats.schemas import ChatCreate
from app.core import ids
from app.core.errors import NotFound
from app.core.pagination import PageParams
from app.profiles.models import Profile


async def list_chats(
    session: AsyncSession,
    profile: Profile,
    page: PageParams,
    before: datetime | None,
    after: datetime | None,
    archived: bool = False,
) -> tuple[list[Chat], int]:
    # Unfiltered, the total is from the profile's kept counts: no count(*) over its chats.
    filtered = before is not None or after is not None
    archived_count = profile.archived_chat_count
    kept = archived_count if archived else profile.chat_count - archived_count
    return await repository.list_page(
        session,
        profile.id,
        page,
        active_after=after,
        active_before=before,
        kept_total=None if filtered else kept,
        archived=archived,
    )


async def set_archived(session: AsyncSession, scope: Scope, chat_id: str, archived: bool) -> Chat:
    """Archive the chat (out of lists until asked for, or until the participant writes) or
    bring it back."""
    chat, _ = await find_chat(session, scope, chat_id)
    await repository.set_archived(session, chat, archived)
    return chat


async def find_or_create(
    session: AsyncSession, profile: Profile, fields: ChatCreate
) -> tuple[Chat, bool]:
    """The chat with this participant, created if new; given fields overwrite stored ones."""
    given = fields.model_dump(exclude_unset=True, exclude={"participant_external_id"})
    return await repository.upsert(session, profile.id, fields.participant_external_id, given)


async def find_chat(session: AsyncSession, scope: Scope, chat_id: str) -> tuple[Chat, Profile]:
    """A chat, with its profile, by our public id or, failing that, by Meta's conversation id
    (which never decodes as ours: only the canonical encoding of a chat serial does)."""
    key = ids.lookup(ids.Kind.CHAT, chat_id)
    found = None if key is None else await repository.get_visible(session, scope, key)
    if found is None:
        raise NotFound("Chat")
    return found
