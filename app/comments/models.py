from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.core.models import SerialId, Timestamps


class Comment(SerialId, Timestamps, Base):
    """A comment on one of the account's posts, from Meta's `comments` webhook field: what a
    private reply needs (its author, its time, whether it has had one)."""

    __tablename__ = "comments"
    __table_args__ = (
        # Meta may deliver a comment twice (ads): its id is the dedupe key.
        Index("uq_comments_profile_external_id", "profile_id", "external_id", unique=True),
    )

    profile_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("profiles.id", ondelete="CASCADE"), nullable=False
    )
    external_id: Mapped[str] = mapped_column(Text, nullable=False)
    # The post (Meta's media id) it is on, and the comment it answers, if any.
    post_external_id: Mapped[str | None] = mapped_column(Text)
    parent_external_id: Mapped[str | None] = mapped_column(Text)
    media_product_type: Mapped[str | None] = mapped_column(Text)
    # The commenter's IGSID: a private reply goes to them, filed in their chat.
    author_external_id: Mapped[str | None] = mapped_column(Text)
    author_username: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str | None] = mapped_column(Text)
    commented_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # The private reply sent to it: Meta allows one.
    private_reply_message_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("messages.id", ondelete="SET NULL")
    )
