from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.chats import window
from app.chats.models import Chat
from app.core import ids
from app.core.schemas import Text

IGSID_PATTERN = r"^[0-9]{1,32}$"


class ChatCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    participant_external_id: Text = Field(
        pattern=IGSID_PATTERN,
        description="The participant's Instagram-scoped id (IGSID), as Meta gives it: digits",
        examples=["1602510301006188"],
    )
    participant_username: Text | None = Field(default=None, max_length=255)
    participant_name: Text | None = Field(default=None, max_length=255)


class ChatOut(BaseModel):
    id: str
    profile_id: str
    platform: Literal["instagram"]
    external_placement_id: str | None = None
    group: bool = False
    participant_external_id: str
    participant_username: str | None
    participant_name: str | None
    participant_avatar_url: str | None
    external_conversation_id: str | None
    last_inbound_at: datetime | None
    last_outbound_at: datetime | None
    last_message_at: datetime | None
    metadata: dict[str, Any] | None
    archived: bool
    within_messaging_window: bool | None = Field(
        default=None,
        description="Whether a reply may be sent now (within 24 h of the participant's last "
        "message; a HUMAN_AGENT reply has 7 days); null when no message from them is known",
    )
    created_at: datetime

    @classmethod
    def of(cls, chat: Chat, now: datetime | None = None) -> "ChatOut":
        """The chat as the API shows it; its window as of `now` (by default, the present)."""
        open_now = window.is_open(chat.last_inbound_at, now or datetime.now(UTC))
        return cls(
            id=ids.encode(ids.Kind.CHAT, chat.id),
            profile_id=ids.encode(ids.Kind.PROFILE, chat.profile_id),
            platform="instagram",
            participant_external_id=chat.participant_external_id,
            participant_username=chat.participant_username,
            participant_name=chat.participant_name,
            participant_avatar_url=chat.participant_avatar_url,
            external_conversation_id=chat.external_conversation_id,
            last_inbound_at=chat.last_inbound_at,
            last_outbound_at=chat.last_outbound_at,
            last_message_at=chat.last_message_at,
            metadata=chat.metadata_,
            archived=chat.archived,
            within_messaging_window=open_now,
            created_at=chat.created_at,
        )
