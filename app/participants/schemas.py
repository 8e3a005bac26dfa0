from datetime import datetime

from pydantic import BaseModel


class ParticipantStatusOut(BaseModel):
    follower_count: int | None = None
    is_verified_user: bool | None = None
    is_user_follow_business: bool | None = None
    is_business_follow_user: bool | None = None
    fetched_at: datetime
