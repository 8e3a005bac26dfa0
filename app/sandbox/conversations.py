"""The Conversations API as the sandbox serves it (meta doc §7): an account's conversations,
newest first, with cursor pagination (`paging.cursors`, `next` only while there is more);
a conversation's message ids; and a message's details, readable only for the 20 most recent
messages of its conversation. 2 calls per second per account, as at Meta.

Conversations are seeded through POST /_sandbox/conversations.
"""

import base64
import hashlib
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.sandbox import events
from app.sandbox.errors import THROTTLE, GraphError

DETAILED = 20  # messages whose details Meta returns, per conversation
CALLS_PER_SECOND = 2
MAX_LIMIT = 100


class SeedAttachment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["image", "video", "audio", "file"]
    url: str
    name: str = "attachment"
    mime_type: str | None = Field(None, description="By default, one that fits the type")


class SeedMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = ""
    sent_by: Literal["participant", "account"] = "participant"
    created_time: str = Field(description="ISO 8601, as Meta gives it: 2026-01-02T03:04:05+0000")
    attachments: list[SeedAttachment] = []


DEFAULT_MIME_TYPES = {
    "image": "image/png",
    "video": "video/mp4",
    "audio": "audio/mpeg",
    "file": "application/pdf",
}


def served_attachment(attachment: SeedAttachment, index: int, mid: str) -> dict[str, Any]:
    """An attachment as Meta's Message reference serves it in `attachments.data`: an image
    in `image_data`, a video in `video_data` (each with `url` and `preview_url`), other files
    (audio too) as `file_url`; with `id`, `mime_type`, `name` and `size`."""
    mime_type = attachment.mime_type or DEFAULT_MIME_TYPES[attachment.type]
    served: dict[str, Any] = {
        "id": str(int(hashlib.sha256(f"{mid}:{index}".encode()).hexdigest(), 16) % 10**15),
        "mime_type": mime_type,
        "name": attachment.name,
        "size": 1024,
    }
    if attachment.type == "image":
        served["image_data"] = {
            "width": 640,
            "height": 640,
            "max_width": 640,
            "max_height": 640,
            "url": attachment.url,
            "preview_url": attachment.url,
            "render_as_sticker": False,
        }
    elif attachment.type == "video":
        served["video_data"] = {
            "width": 640,
            "height": 640,
            "length": 5,
            "url": attachment.url,
            "preview_url": attachment.url,
        }
    else:
        served["file_url"] = attachment.url
    return served


class SeedConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    participant_id: str
    participant_username: str = "customer"
    messages: list[SeedMessage] = Field(min_length=1, description="Oldest first")


class Seed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: str
    username: str = "sandbox_user"
    conversations: list[SeedConversation]


@dataclass
class Conversation:
    id: str
    account_id: str
    account_username: str
    participant_id: str
    participant_username: str
    # (mid, created_time, sent by the participant, text, attachments), oldest first.
    messages: list[tuple[str, str, bool, str, list[SeedAttachment]]]

    @property
    def updated_time(self) -> str:
        return self.messages[-1][1]


@dataclass
class Conversations:
    by_id: dict[str, Conversation] = field(default_factory=dict)
    by_mid: dict[str, tuple[Conversation, int]] = field(default_factory=dict)
    _calls: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    # Every call answered, per account, for tests: (path kind, time).
    calls: list[dict[str, Any]] = field(default_factory=list)

    def seed(self, seed: Seed) -> list[str]:
        ids = []
        for given in seed.conversations:
            conversation = Conversation(
                "aWdfZAG06" + events.new_mid()[17:],
                seed.account_id,
                seed.username,
                given.participant_id,
                given.participant_username,
                [
                    (
                        events.new_mid(),
                        m.created_time,
                        m.sent_by == "participant",
                        m.text,
                        m.attachments,
                    )
                    for m in given.messages
                ],
            )
            self.by_id[conversation.id] = conversation
            for index, message in enumerate(conversation.messages):
                self.by_mid[message[0]] = (conversation, index)
            ids.append(conversation.id)
        return ids

    def clear(self) -> None:
        self.by_id.clear()
        self.by_mid.clear()
        self._calls.clear()
        self.calls.clear()

    def _count(self, account_id: str, kind: str) -> None:
        now = time.monotonic()
        window = self._calls[account_id]
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= CALLS_PER_SECOND:
            raise GraphError.transient(*THROTTLE)
        window.append(now)
        self.calls.append({"account_id": account_id, "kind": kind, "at": time.time()})

    def list(self, account_id: str, params: dict[str, Any], url: str) -> dict[str, Any]:
        self._count(account_id, "conversations")
        if params.get("platform") != "instagram":
            raise GraphError(100, "(#100) The parameter platform is required: use instagram")
        try:
            limit = min(int(params.get("limit", 25)), MAX_LIMIT)
            start = (
                int(base64.urlsafe_b64decode(str(params.get("after", "MA=="))))
                if (params.get("after"))
                else 0
            )
        except ValueError as error:
            raise GraphError(100, "(#100) Invalid after cursor or limit") from error
        mine = sorted(
            (c for c in self.by_id.values() if c.account_id == account_id),
            key=lambda c: c.updated_time,
            reverse=True,
        )
        page = mine[start : start + limit]
        fields = str(params.get("fields", ""))
        data = [self._summary(c, "participants" in fields) for c in page]
        paging: dict[str, Any] = {
            "cursors": {"before": _cursor(start), "after": _cursor(start + len(page))}
        }
        if start + len(page) < len(mine):
            paging["next"] = (
                f"{url}?platform=instagram&limit={limit}&after={_cursor(start + len(page))}"
            )
        return {"data": data, "paging": paging}

    def _summary(self, conversation: Conversation, participants: bool) -> dict[str, Any]:
        summary: dict[str, Any] = {"id": conversation.id, "updated_time": conversation.updated_time}
        if participants:
            summary["participants"] = {
                "data": [
                    {
                        "username": conversation.participant_username,
                        "id": conversation.participant_id,
                    },
                    {"username": conversation.account_username, "id": conversation.account_id},
                ]
            }
        return summary

    def read_conversation(self, conversation: Conversation) -> dict[str, Any]:
        self._count(conversation.account_id, "conversation")
        newest_first = reversed(conversation.messages)
        return {
            "messages": {"data": [{"id": m[0], "created_time": m[1]} for m in newest_first]},
            "id": conversation.id,
        }

    def read_message(self, mid: str, params: dict[str, Any]) -> dict[str, Any]:
        conversation, index = self.by_mid[mid]
        self._count(conversation.account_id, "message")
        if index < len(conversation.messages) - DETAILED:
            raise GraphError(100, "(#100) This message has been deleted")
        mid, created_time, from_participant, text, attachments = conversation.messages[index]
        participant = {
            "username": conversation.participant_username,
            "id": conversation.participant_id,
        }
        account = {"username": conversation.account_username, "id": conversation.account_id}
        sender, recipient = (participant, account) if from_participant else (account, participant)
        detail: dict[str, Any] = {
            "id": mid,
            "created_time": created_time,
            "from": sender,
            "to": {"data": [recipient]},
            "message": text,
        }
        # Only when asked for (fields=…,attachments), as Graph returns only requested fields.
        if attachments and "attachments" in str(params.get("fields", "")).split(","):
            detail["attachments"] = {
                "data": [served_attachment(a, i, mid) for i, a in enumerate(attachments)]
            }
        return detail


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode()
