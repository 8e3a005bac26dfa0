"""Comments on the account's posts, as the sandbox emits them (the `comments` webhook field,
meta doc §11.4: the `changes` shape, `entry.time` in seconds) and private replies to them
(§2.9): one per known comment, within 7 days, never with the HUMAN_AGENT tag; anything else
→ 400 100/2534025, "The comment is invalid for a private reply"."""

import time
from typing import Any, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from app.sandbox.errors import GraphError
from app.sandbox.events import Body, Change, new_id

PRIVATE_REPLY_SECONDS = 7 * 24 * 3600
INVALID_COMMENT = 2534025


class CommentRecord(TypedDict):
    account_id: str
    from_id: str
    time: int  # seconds
    replied: bool


class NewComment(BaseModel):
    """`POST /_sandbox/comments`: a comment by `sender_id` on a post of `account_id`."""

    model_config = ConfigDict(extra="forbid")

    account_id: str
    sender_id: str
    text: str
    username: str = "someone"
    comment_id: str = Field(default_factory=new_id)
    media_id: str = Field(default_factory=new_id)
    media_product_type: str = "FEED"
    parent_id: str | None = None
    time: int | None = None  # seconds; default now

    def body(self, at: int) -> Body:
        value: dict[str, Any] = {
            "id": self.comment_id,
            "text": self.text,
            "from": {"id": self.sender_id, "username": self.username},
            "media": {"id": self.media_id, "media_product_type": self.media_product_type},
        }
        if self.parent_id is not None:
            value["parent_id"] = self.parent_id
        change: Change = {"field": "comments", "value": value}
        return {"object": "instagram",
                "entry": [{"id": self.account_id, "time": at, "changes": [change]}]}  # fmt: skip

    def record(self, at: int) -> CommentRecord:
        return {"account_id": self.account_id, "from_id": self.sender_id, "time": at,
                "replied": False}  # fmt: skip


def private_reply_recipient(
    comments: dict[str, CommentRecord], account: str, comment_id: Any, params: dict[str, Any]
) -> CommentRecord:
    """The comment a private reply answers, if Meta would take the reply."""
    comment = comments.get(str(comment_id))
    if params.get("tag") is not None:
        raise GraphError(100, "(#100) A private reply cannot carry a message tag")
    if (
        comment is None
        or comment["account_id"] != account
        or comment["replied"]
        or time.time() - comment["time"] > PRIVATE_REPLY_SECONDS
    ):
        raise GraphError(100, "The comment is invalid for a private reply", INVALID_COMMENT)
    return comment
