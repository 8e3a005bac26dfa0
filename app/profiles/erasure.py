"""Disconnecting a profile, and erasing everything dmrelay keeps of it.

Disconnected, a profile stays with its history (`inactive`): its undelivered sends fail, new
ones are refused, and Meta's webhooks for it are ignored (app/inbound/repository.py:_find_chats)
until it is connected again. Erased, nothing of it is left: its chats, messages, customer events
and chat syncs (deleted with its row), the raw payloads of its inbound events and of the webhook
deliveries kept for diagnosis, stored Idempotency-Key responses about its chats and messages,
and its media copies, participants' pictures included (recorded for deletion in the same
transaction, as an unsend's are).

Its statements are here rather than in repository.py: they reach into other capabilities'
tables, for this rule alone (as app/inbound/erasure.py does for an unsent message).
"""

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.chats.models import Chat
from app.core import ids
from app.core.idempotency import IdempotencyRecord
from app.inbound.models import InboundEvent, WebhookDelivery, WebhookDeliveryStatus
from app.media import service as media
from app.messages.models import UNDELIVERED, Message, MessageStatus
from app.profiles.models import Profile, ProfileStatus

DISCONNECTED = "Not sent: the profile was disconnected before the message could be delivered."


async def disconnect(session: AsyncSession, profile: Profile) -> None:
    """Stop the profile: its undelivered messages fail (a worker sending one right now cannot
    record a later outcome over it: outcomes are written only to undelivered messages)."""
    profile.status = ProfileStatus.INACTIVE
    await session.execute(
        update(Message)
        .where(Message.profile_id == profile.id, Message.status.in_(UNDELIVERED))
        .values(
            status=MessageStatus.FAILED,
            error_message=DISCONNECTED,
            claimed_until=None,
            next_attempt_at=None,
        )
    )


async def erase(session: AsyncSession, profile: Profile) -> None:
    """Delete the profile and every copy of what it held, in the session's transaction; its
    stored media is deleted once that commits."""
    attachments = await session.scalars(
        select(Message.attachments).where(
            Message.profile_id == profile.id, Message.attachments.is_not(None)
        )
    )
    stored = [key for listed in attachments for key in media.stored_keys(listed)]
    # Locked: a participant refresh storing a new picture meanwhile either commits first (its
    # key is read here) or finds the chat gone (and deletes its copy itself).
    stored += await session.scalars(
        select(Chat.participant_avatar_key)
        .where(Chat.profile_id == profile.id, Chat.participant_avatar_key.is_not(None))
        .with_for_update()
    )
    chat_ids = [
        ids.encode(ids.Kind.CHAT, chat)
        for chat in await session.scalars(select(Chat.id).where(Chat.profile_id == profile.id))
    ]
    public_id = ids.encode(ids.Kind.PROFILE, profile.id)
    await session.execute(
        delete(IdempotencyRecord).where(
            or_(
                IdempotencyRecord.response["profile_id"].astext == public_id,
                IdempotencyRecord.response["chat_id"].astext.in_(chat_ids),
            )
        )
    )
    account_events = delete(InboundEvent).where(InboundEvent.account_id == profile.platform_id)
    await session.execute(account_events)
    # Kept only for diagnosis, and a body cannot be redacted item by item if it cannot be
    # parsed: dropped whole when it mentions the account.
    await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.status == WebhookDeliveryStatus.UNPARSEABLE,
            func.strpos(WebhookDelivery.body, profile.platform_id) > 0,
        )
        .values(body=None)
    )
    await session.execute(delete(Profile).where(Profile.id == profile.id))
    if stored:
        await media.delete_after_commit(session, stored)
