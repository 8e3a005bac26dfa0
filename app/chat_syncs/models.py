from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.core.models import SerialId, Timestamps, one_of


class ChatSyncStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


OPEN = (ChatSyncStatus.PENDING, ChatSyncStatus.RUNNING)


class ChatSyncTrigger(StrEnum):
    CONNECT = "connect"
    SCHEDULED = "scheduled"
    BACKFILL = "backfill"


class ChatSync(SerialId, Timestamps, Base):
    """A run importing a profile's conversations through the Conversations API."""

    __tablename__ = "chat_syncs"
    __table_args__ = (
        one_of("trigger", ChatSyncTrigger),
        one_of("status", ChatSyncStatus),
        Index("ix_chat_syncs_profile", "profile_id", "id"),
        # One open sync per profile (migration 0013).
        Index(
            "uq_chat_syncs_open",
            "profile_id",
            unique=True,
            postgresql_where=text("status IN ('pending', 'running')"),
        ),
    )

    profile_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("profiles.id", ondelete="CASCADE"), nullable=False
    )
    trigger: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=ChatSyncStatus.PENDING.value
    )
    backfill_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cursor: Mapped[str | None] = mapped_column(Text)
    chats_seen: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    messages_imported: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    oldest_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
