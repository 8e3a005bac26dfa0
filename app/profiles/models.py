from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.core.models import SerialId, Timestamps, one_of


class Connection(StrEnum):
    """How the profile was connected: Instagram Login, or Facebook Login through a Page."""

    INSTAGRAM_LOGIN = "instagram_login"
    FACEBOOK_LOGIN = "facebook_login"


class ProfileStatus(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    INACTIVE = "inactive"


class ProfileGroup(SerialId, Timestamps, Base):
    __tablename__ = "profile_groups"

    name: Mapped[str] = mapped_column(Text, nullable=False, unique=True)


class Profile(SerialId, Timestamps, Base):
    __tablename__ = "profiles"
    __table_args__ = (
        UniqueConstraint("platform", "platform_id"),
        Index("ix_profiles_erasing", "id", postgresql_where=text("erasing_since IS NOT NULL")),
        one_of("connection", Connection),
        one_of("status", ProfileStatus),
        CheckConstraint(
            f"connection = '{Connection.INSTAGRAM_LOGIN.value}' OR page_id IS NOT NULL",
            name="page_id_for_facebook",
        ),
    )

    profile_group_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("profile_groups.id"), nullable=False, index=True
    )
    platform: Mapped[str] = mapped_column(Text, nullable=False, server_default="instagram")
    # The Instagram professional account id (IG_ID): `entry[].id` in Meta's webhooks.
    platform_id: Mapped[str] = mapped_column(Text, nullable=False)
    username: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    connection: Mapped[str] = mapped_column(Text, nullable=False)
    page_id: Mapped[str | None] = mapped_column(Text)
    access_token_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(
        Text, nullable=False, server_default=ProfileStatus.ACTIVE.value
    )
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    avatar_url: Mapped[str | None] = mapped_column(Text)
    # When the stored token was issued or last refreshed: Meta refreshes a long-lived
    # Instagram Login token only once it is at least 24 hours old.
    token_issued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Send appsecret_proof with this profile's Instagram Login token (always sent with a
    # Page token); Meta does not document it for Instagram Login, so it is opt-in.
    appsecret_proof: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=false())
    # Set when its erasure was asked for: from then on no key sees it, and job erase_profile
    # deletes what it holds in batches, then the row (app/profiles/erasure.py).
    erasing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Kept by a trigger (migration 0004), so an unfiltered page needs no count(*).
    chat_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    # Of those, the archived ones (a trigger, migration 0011): lists leave them out.
    archived_chat_count: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
