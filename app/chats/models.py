from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    SmallInteger,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.core.models import SerialId, Timestamps


class Chat(SerialId, Timestamps, Base):
    __tablename__ = "chats"
    __table_args__ = (
        UniqueConstraint("profile_id", "participant_external_id"),
        # Chat lists: newest activity first, within one profile, archived or not.
        Index(
            "ix_chats_profile_last_message",
            "profile_id",
            "archived",
            "last_message_at",
            "id",
            postgresql_ops={"last_message_at": "DESC NULLS LAST", "id": "DESC"},
        ),
        Index("ix_chats_external_conversation_id", "external_conversation_id"),
    )

    profile_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("profiles.id", ondelete="CASCADE"), nullable=False
    )
    # The customer's Instagram-scoped id (IGSID).
    participant_external_id: Mapped[str] = mapped_column(Text, nullable=False)
    external_conversation_id: Mapped[str | None] = mapped_column(Text)
    participant_name: Mapped[str | None] = mapped_column(Text)
    participant_username: Mapped[str | None] = mapped_column(Text)
    participant_avatar_url: Mapped[str | None] = mapped_column(Text)
    # The participant's picture as copied to the media store (Meta's links expire), and when.
    participant_avatar_key: Mapped[str | None] = mapped_column(Text)
    participant_avatar_synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_inbound_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_outbound_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_message_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    archived: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    # The last attempt to read the participant's profile from Meta, and why it failed.
    participant_synced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    participant_sync_error: Mapped[str | None] = mapped_column(Text)
    # One worker at a time sends a chat's messages, in order; it holds this lease meanwhile.
    send_lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A random token of the worker that took the lease: only it renews or releases it.
    send_lease_owner: Mapped[int | None] = mapped_column(BigInteger)


class ChatMessageCount(Base):
    """A chat's message count, in shards: kept by triggers (migrations 0004, 0017, 0019), so that an
    unfiltered page needs no count(*). The count is the sum of the chat's shards; each
    transaction adds to its backend's shard, so concurrent sends to one chat seldom wait for
    each other, and a send does not write the chat's row."""

    __tablename__ = "chat_message_counts"

    chat_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("chats.id", ondelete="CASCADE"), primary_key=True
    )
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, nullable=False)
