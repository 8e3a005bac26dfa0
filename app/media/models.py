from datetime import datetime

from sqlalchemy import DateTime, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base


class MediaDeletion(Base):
    """A stored copy to delete (its message was unsent), kept until it is gone: the job that
    deletes it may be lost with Redis, and the sweep then enqueues it again."""

    __tablename__ = "media_deletions"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
