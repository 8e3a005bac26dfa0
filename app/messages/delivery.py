"""Delivering one outbound message to Meta: claim it, send it, record the outcome."""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.chats.models import Chat
from app.core import crypto
from app.core.settings import Settings
from app.messages.models import Message
from app.meta.errors import TOKEN_CODE, GraphError
from app.meta.graph import Account, GraphClient, send_body
from app.profiles.models import Profile

log = logging.getLogger(__name__)

# How long a claim keeps other workers off a message: longer than any Graph call may take.
CLAIM_SECONDS = 120
UNDELIVERED = ("pending", "failed_waiting_for_retry")


@dataclass
class Delivery:
    sessionmaker: async_sessionmaker[AsyncSession]
    graph: GraphClient
    settings: Settings

    async def deliver(self, message_id: int) -> None:
        claimed = await self._claim(message_id)
        if claimed is None:
            return
        message, chat, profile = claimed
        account = Account(
            connection=profile.connection,
            platform_id=profile.platform_id,
            page_id=profile.page_id,
            access_token=crypto.decrypt(self.settings.secret_key, profile.access_token_encrypted),
        )
        body = send_body(
            chat.participant_external_id,
            message.body,
            message.attachment,
            message.tag,
            message.reply_to_external_id,
        )
        try:
            answer = await self.graph.send_message(account, body)
        except GraphError as error:
            await self._failed(message, error)
            return
        await self._published(message, chat, str(answer["message_id"]))

    async def _claim(self, message_id: int) -> tuple[Message, Chat, Profile] | None:
        """Take the message for this worker alone, or None if it is not ours to send."""
        async with self.sessionmaker() as session, session.begin():
            claimed = await session.scalar(
                update(Message)
                .where(
                    Message.id == message_id,
                    Message.direction == "outbound",
                    Message.status.in_(UNDELIVERED),
                    (Message.claimed_until.is_(None)) | (Message.claimed_until < func.now()),
                )
                .values(
                    claimed_until=func.now() + text(f"interval '{CLAIM_SECONDS} seconds'"),
                    attempts=Message.attempts + 1,
                )
                .returning(Message)
            )
            if claimed is None:
                return None
            chat, profile = (
                await session.execute(
                    select(Chat, Profile)
                    .join(Profile, Profile.id == Chat.profile_id)
                    .where(Chat.id == claimed.chat_id)
                )
            ).one()
            return claimed, chat, profile

    async def _published(self, message: Message, chat: Chat, external_id: str) -> None:
        now = datetime.now(UTC)
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                update(Message)
                .where(Message.id == message.id)
                .values(
                    status="published",
                    external_id=external_id,
                    external_posted_at=now,
                    claimed_until=None,
                    error_message=None,
                    error_details=None,
                )
            )
            await session.execute(
                update(Chat)
                .where(Chat.id == chat.id)
                .values(
                    last_outbound_at=func.greatest(Chat.last_outbound_at, now),
                    last_message_at=func.greatest(Chat.last_message_at, now),
                )
            )

    async def _failed(self, message: Message, error: GraphError) -> None:
        log.info("message %s failed: Meta error %s/%s", message.id, error.code, error.subcode)
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                update(Message)
                .where(Message.id == message.id)
                .values(
                    status="failed",
                    error_message=error.explain(),
                    error_details=error.details(),
                    claimed_until=None,
                )
            )
            if error.code == TOKEN_CODE:
                await session.execute(
                    update(Profile).where(Profile.id == message.profile_id).values(status="expired")
                )
