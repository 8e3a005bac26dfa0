"""The statements of sender actions."""

from typing import Any

from sqlalchemy import func, literal, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from app.messages.models import Message


async def set_reaction(
    session: AsyncSession, message: Message, sender: str, state: dict[str, Any]
) -> None:
    """Set `sender`'s reaction on the message, in one statement: a participant's reaction
    applied meanwhile (app/inbound/service.py:_apply_reaction) is kept. The message's loaded
    columns are refreshed."""
    await session.execute(
        update(Message)
        .where(Message.id == message.id)
        .values(
            reactions=func.coalesce(Message.reactions, literal({}, JSONB)).op("||")(
                func.jsonb_build_object(sender, literal(state, JSONB))
            ),
            updated_at=func.now(),
        )
    )
    await session.refresh(message)
