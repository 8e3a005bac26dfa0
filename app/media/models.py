from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, DateTime, ForeignKey, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base


class AttachmentStatus(StrEnum):
    """An attachment's status, kept in its message's `attachments` (JSON) and shown by the
    API."""

    # Meta's URL (`source_url`) is to be copied.
    PENDING = "pending"
    # `url` serves it: dmrelay's copy, or Meta's link where nothing is copied.
    PROCESSED = "processed"
    # No copy and no usable link (`error` says why, or `expired`).
    FAILED = "failed"


class MediaDeletion(Base):
    """A stored copy to delete (its message was unsent), kept until it is gone: the job that
    deletes it may be lost with Redis, and the sweep then enqueues it again."""

    __tablename__ = "media_deletions"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class ReusableAttachment(Base):
    """Meta's id for a file a profile has uploaded with `is_reusable` (Attachment Upload
    API), by the file's content key: every later send of the file uses it."""

    __tablename__ = "reusable_attachments"

    profile_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    content_key: Mapped[str] = mapped_column(Text, primary_key=True)
    attachment_id: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
