from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.chat_syncs.models import ChatSync
from app.core import ids
from app.core.schemas import Timestamp


class BackfillChats(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: Timestamp = Field(
        alias="from", description="Import conversations active since (ISO 8601 date or time)"
    )


class ChatSyncOut(BaseModel):
    id: str
    profile_id: str
    placement_id: str | None = None
    kind: str = "chats"
    trigger: str
    status: str
    started_at: datetime | None
    completed_at: datetime | None
    chats_seen: int
    messages_imported: int
    backfill_from: datetime | None
    oldest_updated_at: datetime | None
    error: str | None
    created_at: datetime

    @classmethod
    def of(cls, sync: ChatSync) -> "ChatSyncOut":
        return cls(
            id=ids.encode(ids.Kind.CHAT_SYNC, sync.id),
            profile_id=ids.encode(ids.Kind.PROFILE, sync.profile_id),
            trigger=sync.trigger,
            status=sync.status,
            started_at=sync.started_at,
            completed_at=sync.completed_at,
            chats_seen=sync.chats_seen,
            messages_imported=sync.messages_imported,
            backfill_from=sync.backfill_from,
            oldest_updated_at=sync.oldest_updated_at,
            error=sync.error,
            created_at=sync.created_at,
        )
