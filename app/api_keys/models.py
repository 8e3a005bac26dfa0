from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base
from app.core.models import SerialId, Timestamps


class ApiKey(SerialId, Timestamps, Base):
    __tablename__ = "api_keys"

    name: Mapped[str] = mapped_column(Text, nullable=False)
    # Only the SHA-256 of the token is kept; the token itself is shown once.
    token_hash: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    # NULL: account-wide, the key sees every profile group.
    profile_group_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("profile_groups.id")
    )
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
