"""Disconnecting a profile, and erasing everything dmrelay keeps of it.

Disconnected, a profile stays with its history (`inactive`): its undelivered sends fail, new
ones are refused, and Meta's webhooks for it are ignored (app/inbound/repository.py:_find_chats)
until it is connected again. Erased, nothing of it is left: its chats, messages, customer events,
comments and chat syncs, the raw payloads of its inbound events and of the webhook deliveries
kept for diagnosis, stored Idempotency-Key responses about its chats and messages, and its media
copies, participants' pictures included (recorded for deletion in the same transaction as the
rows that named them, as an unsend's are).

Erasing a big history takes longer than a request may (the statement timeout), so the request
only stops the profile and marks it (`erasing_since`: from then on no key sees it, and it cannot
be connected again), and job `erase_profile` deletes its data in bounded batches, each its own
transaction, then the row. Every step deletes what is left, so a run cut short (a crash, a
deploy) is resumed by the next (cron `sweep_profile_erasures`) and repeating one changes nothing.

Its statements are here rather than in repository.py: they reach into other capabilities'
tables, for this rule alone (as app/inbound/erasure.py does for an unsent message).
"""

import logging
import time
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy import ColumnElement, delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.chats.models import Chat
from app.core import ids
from app.core.db import session_scope
from app.core.idempotency import IdempotencyRecord
from app.core.jobs import Job, JobName, enqueue_after_commit
from app.events.models import CustomerEvent
from app.inbound.models import InboundEvent, WebhookDelivery, WebhookDeliveryStatus
from app.media import service as media
from app.messages.models import UNDELIVERED, Message, MessageStatus
from app.profiles.models import Profile, ProfileStatus

log = logging.getLogger(__name__)

DISCONNECTED = "Not sent: the profile was disconnected before the message could be delivered."
# Rows per statement: each batch is a short transaction, far within the statement timeout.
BATCH = 1000
CHAT_BATCH = 200
# A run stops after this long and is resumed by the sweep, so a job never nears arq's timeout.
RUN_SECONDS = 60.0


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


def erase_job(profile_id: int) -> Job:
    return Job(JobName.ERASE_PROFILE, (profile_id,), f"erase:{profile_id}")


async def start_erasing(session: AsyncSession, profile: Profile) -> None:
    """Stop the profile and hide it at once (in the request's transaction); job
    erase_profile, queued once that commits, deletes the rest."""
    await disconnect(session, profile)
    profile.erasing_since = func.now()
    enqueue_after_commit(session, erase_job(profile.id))


async def erasing(session: AsyncSession) -> list[int]:
    """Profiles whose erasure is not finished."""
    found = await session.scalars(select(Profile.id).where(Profile.erasing_since.is_not(None)))
    return list(found.all())


class Eraser:
    """Erases profiles marked for it, batch by batch; each batch is one unit of work
    (`session_scope`: committed, then the deletion of the media files it named queued)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], redis: ArqRedis) -> None:
        self.sessions = sessions
        self.redis = redis

    def _unit(self) -> AbstractAsyncContextManager[AsyncSession]:
        return asynccontextmanager(session_scope)(self.sessions, self.redis)

    async def erase(self, profile_id: int) -> bool:
        """Erase a profile marked for it; True once nothing of it is left, False if this
        run's time ran out first (the sweep queues the next)."""
        async with self.sessions() as session:
            profile = await session.get(Profile, profile_id)
        if profile is None:
            return True
        if profile.erasing_since is None:
            log.warning("profile %s: asked to erase a profile not marked for it", profile_id)
            return True
        deadline = time.monotonic() + RUN_SECONDS
        steps = (self._chats, self._customer_events, self._inbound_events, self._responses)
        for step in steps:
            while await step(profile):
                if time.monotonic() > deadline:
                    return False
        async with self._unit() as session:
            await _last(session, profile)
        log.info("profile %s: erased", profile_id)
        return True

    async def _chats(self, profile: Profile) -> bool:
        """One batch of chats: the stored responses about them, their messages (batch by
        batch) and their media, then the chats; whether there may be more."""
        async with self.sessions() as session:
            found = await session.scalars(
                select(Chat.id)
                .where(Chat.profile_id == profile.id)
                .order_by(Chat.id)
                .limit(CHAT_BATCH)
            )
            chat_ids = list(found.all())
        if not chat_ids:
            return False
        public_ids = [ids.encode(ids.Kind.CHAT, chat_id) for chat_id in chat_ids]
        about_chats = IdempotencyRecord.response["chat_id"].astext.in_(public_ids)
        while await self._delete_batch(IdempotencyRecord, about_chats):
            pass
        while await self._messages(chat_ids):
            pass
        async with self._unit() as session:
            # Locked: a participant refresh storing a new picture meanwhile either commits
            # first (its key is read here) or finds the chat gone (and deletes its copy).
            keys = await session.scalars(
                select(Chat.participant_avatar_key)
                .where(Chat.id.in_(chat_ids), Chat.participant_avatar_key.is_not(None))
                .with_for_update()
            )
            await media.delete_after_commit(session, [key for key in keys.all() if key])
            await session.execute(delete(Chat).where(Chat.id.in_(chat_ids)))
        return True

    async def _messages(self, chat_ids: list[int]) -> bool:
        """One batch of these chats' messages, their media recorded for deletion with them;
        whether there may be more."""
        async with self._unit() as session:
            batch = select(Message.id).where(Message.chat_id.in_(chat_ids)).limit(BATCH)
            deleted = await session.execute(
                delete(Message).where(Message.id.in_(batch)).returning(Message.attachments)
            )
            rows = deleted.all()
            keys = [key for (listed,) in rows for key in media.stored_keys(listed)]
            await media.delete_after_commit(session, keys)
        return len(rows) == BATCH

    async def _customer_events(self, profile: Profile) -> bool:
        return await self._delete_batch(CustomerEvent, CustomerEvent.profile_id == profile.id)

    async def _inbound_events(self, profile: Profile) -> bool:
        return await self._delete_batch(
            InboundEvent, InboundEvent.account_id == profile.platform_id
        )

    async def _responses(self, profile: Profile) -> bool:
        """Stored Idempotency-Key responses about the profile itself."""
        public_id = ids.encode(ids.Kind.PROFILE, profile.id)
        return await self._delete_batch(
            IdempotencyRecord, IdempotencyRecord.response["profile_id"].astext == public_id
        )

    async def _delete_batch(self, table: Any, condition: ColumnElement[bool]) -> bool:
        """Delete up to BATCH rows of `table` matching `condition`; whether there may be
        more."""
        columns = (
            [IdempotencyRecord.api_key_id, IdempotencyRecord.key]
            if table is IdempotencyRecord
            else [table.id]
        )
        batch = select(*columns).where(condition).limit(BATCH)
        key = tuple_(*columns) if len(columns) > 1 else columns[0]
        async with self._unit() as session:
            deleted = await session.execute(delete(table).where(key.in_(batch)))
        return int(getattr(deleted, "rowcount", 0)) == BATCH


async def _last(session: AsyncSession, profile: Profile) -> None:
    """The row itself, with what a late writer may have added meanwhile (a sync's import, a
    participant's picture): the profile's row is locked first, so a new chat or message,
    whose foreign key needs it, waits for this transaction and then finds it gone."""
    locked = await session.scalar(
        select(Profile.id).where(Profile.id == profile.id).with_for_update()
    )
    if locked is None:
        return
    attachments = await session.scalars(
        select(Message.attachments).where(
            Message.profile_id == profile.id, Message.attachments.is_not(None)
        )
    )
    stored = [key for listed in attachments for key in media.stored_keys(listed)]
    stored += await session.scalars(
        select(Chat.participant_avatar_key).where(
            Chat.profile_id == profile.id, Chat.participant_avatar_key.is_not(None)
        )
    )
    # Kept only for diagnosis, and a body cannot be redacted item by item if it cannot be
    # parsed: dropped whole when it mentions the account (few: only unparseable ones).
    await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.status == WebhookDeliveryStatus.UNPARSEABLE,
            func.strpos(WebhookDelivery.body, profile.platform_id) > 0,
        )
        .values(body=None)
    )
    # What is left cascades with it (comments, chat syncs, late rows).
    await session.execute(delete(Profile).where(Profile.id == profile.id))
    await media.delete_after_commit(session, stored)
