from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.core.models import SerialId, one_of


class CustomerEventType(StrEnum):
    """What a customer event says happened, in Postproxy's names."""

    MESSAGE_RECEIVED = "message.received"
    # Ours when Meta confirms the send, and those sent from the Instagram app (their echo).
    MESSAGE_SENT = "message.sent"
    # Ours, when Meta's echo shows it in the conversation (Instagram has no delivery receipt).
    MESSAGE_DELIVERED = "message.delivered"
    MESSAGE_READ = "message.read"
    MESSAGE_EDITED = "message.edited"
    MESSAGE_DELETED = "message.deleted"
    MESSAGE_FAILED_WAITING_FOR_RETRY = "message.failed_waiting_for_retry"
    MESSAGE_FAILED = "message.failed"
    REACTION_RECEIVED = "reaction.received"
    REFERRAL_RECEIVED = "referral.received"
    PROFILE_CONNECTED = "profile.connected"
    PROFILE_DISCONNECTED = "profile.disconnected"


# Events whose data is `{message, …}` (the SDK's MessageEventData or ReactionEventData).
MESSAGE_EVENTS = frozenset(
    {t for t in CustomerEventType if t.startswith("message.")}
    | {CustomerEventType.REACTION_RECEIVED}
)


class CustomerEvent(SerialId, Base):
    """Something a customer's backend is told about, recorded with the change that caused it."""

    __tablename__ = "customer_events"
    __table_args__ = (
        one_of("type", CustomerEventType),
        Index("ix_customer_events_profile", "profile_id", "id"),
        # Retention (app/webhooks/service.py:prune).
        Index("ix_customer_events_created_at", "created_at"),
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
    # A message event recorded by SQL (message.sent, by publish_send) has no `message` yet:
    # its first dispatch renders the message and freezes it here (app/webhooks/envelope.py).
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    # The message whose content `data` copies, so that an unsend can erase it here too.
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
