from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.core.models import SerialId


class CustomerEventType(StrEnum):
    """What a customer event says happened, in Postproxy's names."""

    MESSAGE_RECEIVED = "message.received"
    MESSAGE_SENT = "message.sent"
    MESSAGE_READ = "message.read"
    MESSAGE_EDITED = "message.edited"
    MESSAGE_DELETED = "message.deleted"
    REACTION_RECEIVED = "reaction.received"
    REFERRAL_RECEIVED = "referral.received"
    PROFILE_CONNECTED = "profile.connected"
    PROFILE_DISCONNECTED = "profile.disconnected"


class CustomerEvent(SerialId, Base):
    """Something a customer's backend is told about, recorded with the change that caused it."""

    __tablename__ = "customer_events"
    __table_args__ = (
        Index("ix_customer_events_profile", "profile_id", "id"),
        Index(
            "ix_customer_events_message_id",
            "message_id",
            postgresql_where="message_id IS NOT NULL",
        ),
    )

    profile_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("profiles.id", ondelete="CASCADE"), nullable=False
    )
    type: Mapped[str] = mapped_column(Text, nullable=False)
    # The event's `data`, as Postproxy's webhook payloads shape it, frozen at the change.
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    # The message whose content `data` copies, so that an unsend can erase it here too.
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
