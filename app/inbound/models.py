from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.core.models import SerialId, one_of, sql_values


class WebhookDeliveryStatus(StrEnum):
    RECEIVED = "received"
    PROCESSED = "processed"
    # Some of it could not be understood: its body is kept, for diagnosis.
    UNPARSEABLE = "unparseable"


class InboundEventStatus(StrEnum):
    PENDING = "pending"
    # Waiting for the message it refers to.
    WAITING = "waiting"
    APPLIED = "applied"
    IGNORED = "ignored"
    FAILED = "failed"


class EventKind(StrEnum):
    """What a `messaging` item of a webhook delivery is (see parsing.ITEM_KINDS)."""

    MESSAGE = "message"
    ECHO = "echo"
    DELETE = "delete"
    REACTION = "reaction"
    READ = "read"
    EDIT = "edit"
    POSTBACK = "postback"
    REFERRAL = "referral"


# Events still to apply: new ones, and those waiting for the message they refer to.
OPEN_EVENT_STATUSES = (InboundEventStatus.PENDING, InboundEventStatus.WAITING)
# Events done with: their payload is dropped.
SETTLED_EVENT_STATUSES = (InboundEventStatus.APPLIED, InboundEventStatus.IGNORED)


class Outcome(StrEnum):
    """What applying an event came to (service.py's appliers)."""

    APPLIED = "applied"
    WAITING = "waiting"  # the message it is about is not stored yet
    IGNORED = "ignored"  # nothing to do (a duplicate of something already stored)

    @property
    def status(self) -> InboundEventStatus:
        """The event's status after this outcome."""
        return _STATUS_AFTER[self]


_STATUS_AFTER = {
    Outcome.APPLIED: InboundEventStatus.APPLIED,
    Outcome.WAITING: InboundEventStatus.WAITING,
    Outcome.IGNORED: InboundEventStatus.IGNORED,
}


class WebhookDelivery(SerialId, Base):
    """A webhook delivery: one verified POST from Meta, kept as received; the ack stores it,
    a worker splits it."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        one_of("status", WebhookDeliveryStatus),
        Index(
            "ix_webhook_deliveries_received",
            "id",
            postgresql_where=f"status = '{WebhookDeliveryStatus.RECEIVED}'",
        ),
        # Only these keep their body: an unsend looks through them.
        Index(
            "ix_webhook_deliveries_unparseable",
            "id",
            postgresql_where=f"status = '{WebhookDeliveryStatus.UNPARSEABLE}'",
        ),
    )

    # As received; dropped once split (the events hold what it said), but kept while any of
    # it could not be understood, for diagnosis.
    body: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=WebhookDeliveryStatus.RECEIVED.value
    )
    # What could not be understood, item by item; the rest of it is still applied.
    problems: Mapped[list[str] | None] = mapped_column(JSONB)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The trace of the POST that stored it, while tracing is on: the batch applying it links
    # to it (migration 0018).
    traceparent: Mapped[str | None] = mapped_column(Text)


class InboundEvent(SerialId, Base):
    """One event of a webhook delivery, staged once however often Meta sends it, applied in
    `occurred_at` order per chat."""

    __tablename__ = "inbound_events"
    __table_args__ = (
        one_of("status", InboundEventStatus),
        one_of("kind", EventKind),
        Index("uq_inbound_events_account_dedupe", "account_id", "dedupe_key", unique=True),
        Index(
            "ix_inbound_events_open",
            "account_id",
            "participant_id",
            "occurred_at",
            postgresql_where=f"status IN {sql_values(OPEN_EVENT_STATUSES)}",
        ),
        # Failed events keep their payload: an unsend finds its message's copies here.
        Index(
            "ix_inbound_events_failed",
            "account_id",
            "mid",
            postgresql_where=f"status = '{InboundEventStatus.FAILED}'",
        ),
    )

    # The webhook delivery it came in.
    delivery_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("webhook_deliveries.id", ondelete="SET NULL")
    )
    # The business's IG_ID (`entry.id`) and the customer's IGSID: together, the chat.
    account_id: Mapped[str] = mapped_column(Text, nullable=False)
    participant_id: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    mid: Mapped[str | None] = mapped_column(Text)
    dedupe_key: Mapped[str] = mapped_column(Text, nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # The `messaging` item as Meta sent it, until applied or ignored (a failed event keeps
    # it, for diagnosis): what it said is then in the rows it changed, and only there.
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=InboundEventStatus.PENDING.value
    )
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
