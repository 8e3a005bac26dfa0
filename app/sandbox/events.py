"""Meta's Instagram webhook events (meta doc §5.4-5.7): the emitter's event models, the
messaging items they become, and the envelopes that batch those items.

An EVENT for `POST /_sandbox/emit` is `{"kind", "account_id", "sender_id", "timestamp"?, ...}`;
`sender_id` is always the customer's IGSID (an echo's recipient), `timestamp` is in ms. Message
kinds get a fresh `mid` unless one is given; reaction, read, edit and delete name the `mid` they
are about. Kind-specific fields are on the models below.
"""

import base64
import secrets
import uuid
from abc import abstractmethod
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict, Field, model_validator

AttachmentType = Literal[
    "image", "video", "audio", "file", "ig_post", "share", "ig_reel", "reel", "story_mention",
    "ephemeral", "fallback", "template", "sticker",
]  # fmt: skip
# Item key -> the subscription field it belongs to, as the `changes` shape names it.
FIELD_BY_KEY = {
    "message": "messages",
    "reaction": "message_reactions",
    "read": "messaging_seen",
    "postback": "messaging_postbacks",
    "referral": "messaging_referral",
    "message_edit": "message_edit",
}
MediaUrl = Callable[[str], str]  # attachment type -> a fresh sandbox media URL
Batch = Literal["single", "entries", "messaging"]
Shape = Literal["messaging", "standby", "changes"]
# Meta's JSON objects, varied and nested (meta doc §5.5-5.7): an item's content, an attachment,
# a sent message. A messaging item is {"sender", "recipient", "timestamp"} plus one key from
# FIELD_BY_KEY holding its content.
JSONObject = dict[str, Any]
Item = JSONObject


class Change(TypedDict):
    field: str
    value: Item


class Entry(TypedDict):
    id: str
    time: int
    messaging: NotRequired[list[Item]]
    standby: NotRequired[list[Item]]
    changes: NotRequired[list[Change]]


class Body(TypedDict):
    object: Literal["instagram"]
    entry: list[Entry]


def new_mid() -> str:
    return "aWdfZAG1faXRlbTox" + base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def new_id() -> str:
    return str(10**16 + secrets.randbelow(9 * 10**16))


def attachment(kind: str, url: str | None, title: str | None, id_: str | None) -> JSONObject:
    """One webhook attachment; its payload differs per type (meta doc §5.5)."""
    if kind == "ephemeral":  # view-once media comes without a URL
        return {"type": kind}
    if kind == "template":  # a product share
        product = {"id": id_ or new_id(), "retailer_id": "sku-1", "image_url": url,
                   "title": title or "Product", "subtitle": "$10.00"}  # fmt: skip
        return {"type": kind, "payload": {"product": {"elements": [product]}}}
    payload: JSONObject = {"url": url}
    if kind in ("ig_post", "ig_reel", "reel", "fallback"):
        payload["title"] = title or "A post"
    if kind == "ig_post":
        payload["id"] = id_ or new_id()
    elif kind in ("ig_reel", "reel"):
        payload["reel_video_id"] = id_ or new_id()
    elif kind == "sticker":
        payload["sticker_id"] = id_ or "369239263222822"
    return {"type": kind, "payload": payload}


def echo_message(mid: str, sent: JSONObject) -> JSONObject:
    """The echo of a message the business sent; webhooks always carry an `attachments` list."""
    content = dict(sent)
    if "attachment" in content:
        content["attachments"] = [content.pop("attachment")]
    return {"mid": mid, "is_echo": True, **content}


def messaging_item(
    sender: str, recipient: str, timestamp: int, key: str, content: JSONObject
) -> Item:
    return {"sender": {"id": sender}, "recipient": {"id": recipient}, "timestamp": timestamp,
            key: content}  # fmt: skip


def item_key(item: Item) -> str:
    return next(key for key in item if key in FIELD_BY_KEY)


def opens_profile(item: Item) -> bool:
    """A customer's message or postback grants profile access (meta doc §6); echoes do not."""
    key = item_key(item)
    return key == "postback" or (key == "message" and not item[key].get("is_echo"))


# --- the emitter's events ------------------------------------------------------------------


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: str
    sender_id: str
    timestamp: int | None = None
    key: ClassVar[str] = "message"

    @abstractmethod
    def content(self, media_url: MediaUrl) -> JSONObject:
        """What the item carries under its key."""

    def item(self, timestamp: int, media_url: MediaUrl) -> Item:
        content = self.content(media_url)
        return messaging_item(self.sender_id, self.account_id, timestamp, self.key, content)


class Message(Event):
    mid: str = Field(default_factory=new_mid)


class Text(Message):
    kind: Literal["text"]
    text: str

    def content(self, media_url: MediaUrl) -> JSONObject:
        return {"mid": self.mid, "text": self.text}


class Attachment(Message):
    kind: Literal["attachment"]
    type: AttachmentType
    url: str | None = None  # default: a fresh sandbox media URL
    title: str | None = None
    id: str | None = None  # ig_post id, reel_video_id, sticker_id or product id

    def content(self, media_url: MediaUrl) -> JSONObject:
        url = self.url or media_url(self.type)
        return {"mid": self.mid, "attachments": [attachment(self.type, url, self.title, self.id)]}


class Reply(Message):
    kind: Literal["reply"]
    text: str
    reply_to_mid: str

    def content(self, media_url: MediaUrl) -> JSONObject:
        return {"mid": self.mid, "text": self.text, "reply_to": {"mid": self.reply_to_mid}}


class Story(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    id: str | None = None


class StoryReply(Message):
    kind: Literal["story_reply"]
    text: str
    story: Story = Story()

    def content(self, media_url: MediaUrl) -> JSONObject:
        story = {"url": self.story.url or media_url("story"), "id": self.story.id or new_id()}
        return {"mid": self.mid, "text": self.text, "reply_to": {"story": story}}


class QuickReply(Message):
    kind: Literal["quick_reply"]
    text: str
    payload: str

    def content(self, media_url: MediaUrl) -> JSONObject:
        return {"mid": self.mid, "text": self.text, "quick_reply": {"payload": self.payload}}


class Postback(Message):
    kind: Literal["postback"]
    key: ClassVar[str] = "postback"
    title: str
    payload: str

    def content(self, media_url: MediaUrl) -> JSONObject:
        return {"mid": self.mid, "title": self.title, "payload": self.payload}


class Referral(Message):
    """A standalone `referral` event (ig.me link), or with in_message a message's `referral`
    (click-to-Direct ad), which may come with the customer's text."""

    kind: Literal["referral"]
    ref: str
    source: str
    type: str = "OPEN_THREAD"
    ad_id: str | None = None
    ads_context_data: dict[str, Any] | None = None
    in_message: bool = False
    text: str | None = None

    @property
    def key(self) -> str:  # type: ignore[override]
        return "message" if self.in_message else "referral"

    def content(self, media_url: MediaUrl) -> JSONObject:
        referral = self.model_dump(
            include={"ref", "source", "type", "ad_id", "ads_context_data"}, exclude_none=True
        )
        if not self.in_message:
            return referral
        text = {"text": self.text} if self.text is not None else {}
        return {"mid": self.mid, **text, "referral": referral}


class Unsupported(Message):
    kind: Literal["unsupported"]

    def content(self, media_url: MediaUrl) -> JSONObject:
        return {"mid": self.mid, "is_unsupported": True}


class EchoEvent(Message):
    """A message the business sent (from any inbox): text, an attachment, or both."""

    kind: Literal["echo"]
    text: str | None = None
    type: AttachmentType | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _has_content(self) -> "EchoEvent":
        if self.text is None and self.type is None:
            raise ValueError("an echo needs text or an attachment type")
        return self

    def content(self, media_url: MediaUrl) -> JSONObject:
        sent: JSONObject = {} if self.text is None else {"text": self.text}
        if self.type is not None:
            sent["attachment"] = attachment(self.type, self.url or media_url(self.type), None, None)
        return echo_message(self.mid, sent)

    def item(self, timestamp: int, media_url: MediaUrl) -> Item:
        content = self.content(media_url)
        return messaging_item(self.account_id, self.sender_id, timestamp, self.key, content)


class Reaction(Event):
    kind: Literal["reaction"]
    key: ClassVar[str] = "reaction"
    mid: str
    action: Literal["react", "unreact"] = "react"
    reaction: str = "love"
    emoji: str = "\u2764\ufe0f"

    def content(self, media_url: MediaUrl) -> JSONObject:
        if self.action == "unreact":  # Meta leaves reaction and emoji out
            return {"mid": self.mid, "action": self.action}
        return {"mid": self.mid, "action": self.action, "reaction": self.reaction,
                "emoji": self.emoji}  # fmt: skip


class Read(Event):
    kind: Literal["read"]
    key: ClassVar[str] = "read"
    mid: str

    def content(self, media_url: MediaUrl) -> JSONObject:
        return {"mid": self.mid}


class Edit(Event):
    kind: Literal["edit"]
    key: ClassVar[str] = "message_edit"
    mid: str
    text: str
    num_edit: int = 1

    def content(self, media_url: MediaUrl) -> JSONObject:
        return {"mid": self.mid, "text": self.text, "num_edit": self.num_edit}


class Delete(Event):
    kind: Literal["delete"]
    mid: str

    def content(self, media_url: MediaUrl) -> JSONObject:
        return {"mid": self.mid, "is_deleted": True}


AnyEvent = Annotated[
    Text
    | Attachment
    | Reply
    | StoryReply
    | QuickReply
    | Postback
    | Referral
    | Unsupported
    | EchoEvent
    | Reaction
    | Read
    | Edit
    | Delete,
    Field(discriminator="kind"),
]


# --- envelopes -----------------------------------------------------------------------------


def entry(account_id: str, items: list[Item], shape: Shape) -> Entry:
    """One `entry`: items under `messaging`/`standby`, or the dashboard-test `changes` shape."""
    time: int = max(item["timestamp"] for item in items)
    if shape == "changes":  # Meta's test events carry entry id "0" (meta doc §5.4)
        changes: list[Change] = [
            {"field": FIELD_BY_KEY[item_key(item)], "value": item} for item in items
        ]
        return {"id": "0", "time": time, "changes": changes}
    if shape == "standby":
        return {"id": account_id, "time": time, "standby": items}
    return {"id": account_id, "time": time, "messaging": items}


def body(entries: list[Entry]) -> Body:
    return {"object": "instagram", "entry": entries}


def bodies(items: list[tuple[str, Item]], batch: Batch, shape: Shape) -> list[Body]:
    """Webhook bodies for (account id, item) pairs: one per item ("single"), one entry per
    item ("entries"), or one entry per account holding all its items ("messaging")."""
    if batch == "messaging":
        by_account: dict[str, list[Item]] = {}
        for account_id, item in items:
            by_account.setdefault(account_id, []).append(item)
        return [body([entry(a, group, shape) for a, group in by_account.items()])]
    entries = [entry(account_id, [item], shape) for account_id, item in items]
    return [body(entries)] if batch == "entries" else [body([e]) for e in entries]
