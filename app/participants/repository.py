"""Every query on participants' profiles, which are kept on their chats."""

from collections.abc import Sequence
from typing import Any
from typing import cast as typed

from sqlalchemy import ColumnElement, Row, Table, bindparam, cast, func, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from app.chats.models import Chat
from app.profiles.models import Profile

_chats = typed(Table, Chat.__table__)


async def chats_with_profiles(
    session: AsyncSession, chat_ids: list[int]
) -> Sequence[Row[Chat, Profile]]:
    result = await session.execute(
        select(Chat, Profile)
        .join(Profile, Profile.id == Chat.profile_id)
        .where(Chat.id.in_(chat_ids))
    )
    return result.all()


async def chat_with(session: AsyncSession, profile_id: int, participant_id: str) -> Chat | None:
    """The profile's chat with this participant (their IGSID), if there is one."""
    return await session.scalar(
        select(Chat).where(
            Chat.profile_id == profile_id, Chat.participant_external_id == participant_id
        )
    )


async def lock_avatar_keys(session: AsyncSession, chat_ids: list[int]) -> dict[int, str | None]:
    """The stored picture key of each of these chats that exists, the chats locked in id
    order until the transaction ends."""
    result = await session.execute(
        select(Chat.id, Chat.participant_avatar_key)
        .where(Chat.id.in_(chat_ids))
        .order_by(Chat.id)
        .with_for_update()
    )
    return {chat_id: key for chat_id, key in result.all()}


async def store(session: AsyncSession, rows: list[tuple[int, dict[str, Any]]]) -> None:
    """Set these columns on these chats, by one statement; every row sets the same columns.
    A `metadata` column is merged into the stored one, in the UPDATE itself (no locked read
    of the rows first). The chats are locked in the order given."""
    # Parameters are named apart from the columns they set, as SQLAlchemy requires.
    values: dict[str, ColumnElement[Any]] = {name: bindparam(f"new_{name}") for name in rows[0][1]}
    if "metadata" in values:
        values["metadata"] = func.coalesce(_chats.c.metadata, cast({}, JSONB)).op("||")(
            bindparam("new_metadata", type_=JSONB)
        )
    parameters = [
        {"chat_id": chat_id, **{f"new_{name}": v for name, v in columns.items()}}
        for chat_id, columns in rows
    ]
    await session.execute(
        update(_chats).where(_chats.c.id == bindparam("chat_id")).values(values), parameters
    )
