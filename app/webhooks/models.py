"""Customer webhooks: the endpoints (`CustomerWebhook`), what each still has to be sent
(`Dispatch`, one per endpoint and event: the outbox), and every attempt (`DispatchAttempt`,
the delivery log the API lists as `/deliveries`).

"Webhook delivery" is Meta's inbound POST (app/inbound); here the customer is the receiver."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.core.models import SerialId, Timestamps, one_of


class DispatchStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    # Every attempt of the retry schedule failed.
    FAILED = "failed"


class CustomerWebhook(SerialId, Timestamps, Base):
    """An endpoint a customer registered. With no profile group, it hears every profile's
    events (made by a key that sees every group)."""

    __tablename__ = "customer_webhooks"

    profile_group_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("profile_groups.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(Text, nullable=False)
    events: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    secret_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="true")
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    consecutive_failures: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # One worker at a time sends an endpoint's events (their order), as chats' send leases.
    lease_owner: Mapped[int | None] = mapped_column(BigInteger)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Dispatch(SerialId, Base):
    """An event one endpoint is to be sent. Written by a trigger on `customer_events`
    (migration 0010) in the transaction that records the event."""

    __tablename__ = "customer_webhook_dispatches"
    __table_args__ = (
        one_of("status", DispatchStatus),
        # An endpoint's queue, in order; and what is due, for the poller.
        Index(
            "ix_customer_webhook_dispatches_pending",
            "webhook_id",
            "id",
            postgresql_where="status = 'pending'",
        ),
        Index(
            "ix_customer_webhook_dispatches_due",
            "next_attempt_at",
            postgresql_where="status = 'pending'",
        ),
        Index("ix_customer_webhook_dispatches_event", "event_id"),
    )

    webhook_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customer_webhooks.id", ondelete="CASCADE"), nullable=False
    )
    # None for a test event, whose data is `test_data`.
    event_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("customer_events.id", ondelete="CASCADE")
    )
    event_type: Mapped[str] = mapped_column(Text, nullable=False)
    test_data: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=DispatchStatus.PENDING.value
    )
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class DispatchAttempt(SerialId, Base):
    """One POST to an endpoint: kept after its event is pruned (no foreign key to it)."""

    __tablename__ = "customer_webhook_attempts"
    __table_args__ = (Index("ix_customer_webhook_attempts_webhook", "webhook_id", "id"),)

    webhook_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("customer_webhooks.id", ondelete="CASCADE"), nullable=False
    )
    dispatch_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # The envelope's `id`, as the endpoint saw it.
    event_public_id: Mapped[str] = mapped_column(Text, nullable=False)
    event_type: Mapped[str] = mapped_column(Text, nullable=False)
    attempt_number: Mapped[int] = mapped_column(Integer, nullable=False)
    response_status: Mapped[int | None] = mapped_column(Integer)
    success: Mapped[bool] = mapped_column(Boolean, nullable=False)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
