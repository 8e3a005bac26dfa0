from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from app.core import ids
from app.core.schemas import Text

if TYPE_CHECKING:
    from app.api_keys.models import ApiKey


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


class ApiKeyOut(BaseModel):
    """An API key as the API shows it: `token` only in the answer that created it."""

    id: str
    name: str
    profile_group_id: str | None
    sandbox: bool = False
    token: str | None = None
    created_at: datetime

    @classmethod
    def of(cls, key: "ApiKey", token: str | None = None) -> "ApiKeyOut":
        group = key.profile_group_id
        return cls(
            id=ids.encode(ids.Kind.API_KEY, key.id),
            name=key.name,
            profile_group_id=None if group is None else ids.encode(ids.Kind.PROFILE_GROUP, group),
            token=token,
            created_at=key.created_at,
        )


class ApiKeyList(BaseModel):
    data: list[ApiKeyOut]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=255)
    profile_group_id: Text = Field(description="The profile group the key is confined to")
