from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from app.core import ids
from app.profiles.models import Profile


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
    avatar_url: str | None = None

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
        )


class ProfileList(BaseModel):
    data: list[ProfileOut]
