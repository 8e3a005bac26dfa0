from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Principal:
    api_key_id: int
    # None: an account-wide key, which sees every profile group.
    profile_group_id: int | None


@dataclass(frozen=True)
class KeyInfo:
    """An API key as an operator sees it: never its token, which is not stored."""

    id: int
    name: str
    profile_group_id: int | None
    profile_group: str | None
    created_at: datetime
    revoked_at: datetime | None
