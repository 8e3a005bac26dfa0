from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.core.models import SerialId, Timestamps, one_of, sql_values


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class MessageStatus(StrEnum):
    # Outbound: accepted, then published by Meta, or failed (for now or for good).
    PENDING = "pending"
    PUBLISHED = "published"
    FAILED_WAITING_FOR_RETRY = "failed_waiting_for_retry"
    FAILED = "failed"
    # Inbound.
    RECEIVED = "received"


# Outbound messages still owed to Meta.
UNDELIVERED = (MessageStatus.PENDING, MessageStatus.FAILED_WAITING_FOR_RETRY)


class Message(SerialId, Timestamps, Base):
    __tablename__ = "messages"
    __table_args__ = (
        one_of("direction", Direction),
        one_of("status", MessageStatus),
        # Meta's mid is unique per account: the dedupe key for webhooks and echoes.
        Index("uq_messages_profile_external_id", "profile_id", "external_id", unique=True),
        Index("ix_messages_external_id", "external_id"),
        Index(
            "ix_messages_chat_sort",
            "chat_id",
            "sort_at",
            "id",
            postgresql_ops={"sort_at": "DESC", "id": "DESC"},
        ),
        # The deliveries still owed, oldest first: what workers and the sweeper look at.
        Index(
            "ix_messages_undelivered",
            "chat_id",
            "id",
            postgresql_where=f"status IN {sql_values(UNDELIVERED)}",
        ),
    )

    chat_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("chats.id", ondelete="CASCADE"), nullable=False
    )
    # Denormalised from the chat so that external_id can be unique per profile.
    profile_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("profiles.id", ondelete="CASCADE"), nullable=False
    )
    direction: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[str | None] = mapped_column(Text)
    tag: Mapped[str | None] = mapped_column(Text)
    # Outbound media: the one attachment of the send, as {"type", "url"}.
    attachment: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    reply_to_external_id: Mapped[str | None] = mapped_column(Text)
    # Outbound: the interactive content it was sent with (quick_replies, buttons, card,
    # elements; app/messages/interactive.py), as the API shows it.
    interactive: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # A private reply: the comment it answers (Meta's `recipient: {comment_id}`).
    external_comment_id: Mapped[str | None] = mapped_column(Text)
    # Outbound, while tracing is on: the W3C traceparent of the request that accepted it, so
    # that its send and echo join that trace (app/core/tracing.py).
    traceparent: Mapped[str | None] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    error_details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    platform_data: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # Set while an attempt is under way: still set afterwards, the attempt's outcome is unknown.
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When a message waiting for retry (or held by a throttle) may be sent again.
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    external_posted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    external_read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    external_edited_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    external_deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Webhook content (inbound messages and echoes): the attachments, each
    # {type, url, status, source_url?, external_id?, title?}; `url` is dmrelay's copy once
    # mirrored.
    attachments: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    # The participant's current reaction, keyed by their IGSID: {action, reaction, emoji, at}.
    # An unreact is kept (not removed) so that an older react delivered late cannot revive it.
    reactions: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    tapped_action: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    story_reply: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    referral: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    is_unsupported: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    # Newest-first listing key: Meta's time, or creation for what Meta has not seen yet.
    sort_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True),
        Computed("COALESCE(external_posted_at, created_at)", persisted=True),
    )


@dataclass
class MessageRow:
    """A stored message as a Core statement returns it (INSERT … RETURNING), for paths that
    store many at once: Message's columns, without the ORM's cost per object (several times
    that of building this). Not tracked by a session: a change to it is not written."""

    id: int
    chat_id: int
    profile_id: int
    direction: str
    status: str
    body: str | None
    tag: str | None
    attachment: dict[str, Any] | None
    reply_to_external_id: str | None
    external_id: str | None
    error_message: str | None
    error_details: dict[str, Any] | None
    platform_data: dict[str, Any] | None
    attempts: int
    claimed_until: datetime | None
    next_attempt_at: datetime | None
    external_posted_at: datetime | None
    external_read_at: datetime | None
    external_edited_at: datetime | None
    external_deleted_at: datetime | None
    attachments: list[dict[str, Any]] | None
    reactions: dict[str, Any] | None
    tapped_action: dict[str, Any] | None
    story_reply: dict[str, Any] | None
    referral: dict[str, Any] | None
    is_unsupported: bool
    sort_at: datetime
    created_at: datetime
    updated_at: datetime
    interactive: dict[str, Any] | None = None
    external_comment_id: str | None = None
    traceparent: str | None = None
