from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.core import ids
from app.core.schemas import Text
from app.profiles.models import Profile, ProfileGroup


class ProfileOut(BaseModel):
    id: str
    name: str
    username: str | None
    status: Literal["active", "expired", "inactive"]
    platform: Literal["instagram"]
    platform_id: str
    profile_group_id: str
    expires_at: datetime | None
    post_count: int
    avatar_url: str | None

    @classmethod
    def of(cls, profile: Profile) -> "ProfileOut":
        return cls(
            id=ids.encode(ids.Kind.PROFILE, profile.id),
            name=profile.name or profile.username or profile.platform_id,
            username=profile.username,
            status=profile.status,
            platform="instagram",
            platform_id=profile.platform_id,
            profile_group_id=ids.encode(ids.Kind.PROFILE_GROUP, profile.profile_group_id),
            expires_at=profile.expires_at,
            post_count=0,
            avatar_url=profile.avatar_url,
        )


class ProfileList(BaseModel):
    data: list[ProfileOut]


class ProfileGroupOut(BaseModel):
    id: str
    name: str
    profiles_count: int

    @classmethod
    def of(cls, group: ProfileGroup, profiles_count: int) -> "ProfileGroupOut":
        return cls(
            id=ids.encode(ids.Kind.PROFILE_GROUP, group.id),
            name=group.name,
            profiles_count=profiles_count,
        )


class ProfileGroupList(BaseModel):
    data: list[ProfileGroupOut]


class ProfileGroupFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=255, description="Unique among your groups")

    @field_validator("name")
    @classmethod
    def _not_blank(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("must not be only whitespace")
        return name.strip()


class ProfileGroupCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile_group: ProfileGroupFields


class DeleteOut(BaseModel):
    deleted: bool


class SuccessOut(BaseModel):
    success: bool
