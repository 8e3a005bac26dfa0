from datetime import datetime
from typing import Annotated, Any, Literal, cast
from urllib.parse import urlparse

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.chats.schemas import IGSID_PATTERN
from app.core import ids
from app.core.addresses import local_host_reason
from app.core.errors import FieldError
from app.core.schemas import Text
from app.media.models import AttachmentStatus
from app.media.outbound import UPLOAD_MARKER, decode_data_uri
from app.messages import interactive
from app.messages.models import Message, MessageRow

# Direction and MessageStatus values, as the API's schema lists them (tests/test_messages.py
# checks that they match).
DirectionName = Literal["inbound", "outbound"]
StatusName = Literal["pending", "published", "failed_waiting_for_retry", "failed", "received"]

MAX_TEXT_CHARACTERS = 1000
# Meta documents both "less than 1000 characters" and "UTF-8, 1000 bytes or less";
# the byte rule is the one that fails at Meta for non-ASCII text.
MAX_TEXT_BYTES = 1000

# Postproxy send options that Instagram through dmrelay does not offer (yet).
UNSUPPORTED_OPTIONS = (
    "reply_markup",
    "template",
    "interactive",
    "location",
    "contacts",
    "category",
    "link_preview",
    "voice_note",
    "filename",
)


def _media_item(item: str, info: ValidationInfo) -> str:
    """A media URL (public http(s)) or base64 `data:` URI, as far as it can be checked
    without fetching it; its type and size are checked later (app/media/outbound.py)."""
    if item.startswith(UPLOAD_MARKER) and (info.context or {}).get("uploads"):
        return item
    if item[:5].lower() == "data:":
        try:
            decode_data_uri(item)
        except ValueError as error:
            raise ValueError(f"is not a usable data: URI: {error}") from error
        return item
    parsed = urlparse(item)
    if parsed.scheme not in {"http", "https"} or not parsed.hostname:
        raise ValueError(f"must be a public http(s) URL or a base64 data: URI, not {item!r}")
    # Meta fetches the media, from the internet: a local address could never work, and names
    # one of ours. (No DNS lookup here: what a name resolves to is checked where it is fetched.)
    if (local := local_host_reason(parsed.hostname)) is not None:
        raise ValueError(f"must be a public http(s) URL: {local}")
    return item


def _message_text(body: str) -> str | None:
    if body == "":
        return None  # as if not given: a media message may come with an empty body
    if body.isspace():
        raise ValueError("must hold some text, not only whitespace")
    characters, size = len(body), len(body.encode("utf-8"))
    if characters > MAX_TEXT_CHARACTERS or size > MAX_TEXT_BYTES:
        raise ValueError(
            f"is {characters} characters ({size} UTF-8 bytes); Instagram accepts at most "
            f"{MAX_TEXT_CHARACTERS} characters and {MAX_TEXT_BYTES} bytes"
        )
    return body


MessageText = Annotated[Text, AfterValidator(_message_text)]
MediaURL = Annotated[Text, AfterValidator(_media_item)]


class MessageSend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The limits are documented here and enforced by the validators, in their own words.
    body: MessageText | None = Field(
        default=None,
        description=f"The text: at most {MAX_TEXT_CHARACTERS} characters and "
        f"{MAX_TEXT_BYTES} UTF-8 bytes, not only whitespace; or media instead",
        json_schema_extra={"maxLength": MAX_TEXT_CHARACTERS},
        examples=["Thanks for your order! It ships today."],
    )
    media: list[MediaURL] | None = Field(
        default=None,
        description="One attachment (Instagram takes one per message): a public http(s) URL "
        "or a base64 data: URI; its type is told from its content",
        json_schema_extra={"maxItems": 1},
        examples=[["https://cdn.example.com/receipt.png"]],
    )
    tag: Literal["HUMAN_AGENT"] | None = Field(
        default=None,
        description="HUMAN_AGENT lets a human reply up to 7 days after the last inbound message",
    )
    reply_to_external_id: Text | None = Field(default=None, min_length=1, max_length=512)
    # Interactive content (app/messages/interactive.py).
    quick_replies: interactive.QuickReplies | None = None
    buttons: interactive.Buttons | None = None
    card: interactive.CardIn | None = None
    elements: interactive.Elements | None = None
    # Derived from media once checked (attach): {"type", "url", "status", "content_key", …}.
    _attachment: dict[str, Any] | None = PrivateAttr(default=None)
    # Derived from the interactive fields: what the message stores of them.
    _interactive: dict[str, Any] | None = PrivateAttr(default=None)

    @property
    def attachment(self) -> dict[str, Any] | None:
        return self._attachment

    @property
    def interactive(self) -> dict[str, Any] | None:
        return self._interactive

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        # The Postproxy SDK can send these; refuse them clearly rather than drop them.
        if isinstance(data, dict):
            offered = [k for k in UNSUPPORTED_OPTIONS if data.get(k) is not None]
            if offered:
                raise FieldError(
                    f"{', '.join(offered)} cannot be sent to Instagram by dmrelay", *offered
                )
            data = {k: v for k, v in data.items() if k not in UNSUPPORTED_OPTIONS}
        return data

    @field_validator("media")
    @classmethod
    def _one_attachment(cls, media: list[str] | None) -> list[str] | None:
        if media is not None and len(media) > 1:
            raise ValueError("Instagram takes one attachment per message; send one media item")
        return media

    @model_validator(mode="after")
    def _check_meta_rules(self) -> "MessageSend":
        given = {name: getattr(self, name) for name in interactive.FIELDS}
        # A plain send (the hot path) has none: nothing to check, nothing to store.
        if any(value is not None for value in given.values()):
            content = interactive.Interactive.model_construct(**given)
            content.check(self.body, bool(self.media))
            self._interactive = content.stored()
        if self.body is None and not self.media and self.elements is None:
            raise FieldError("a message needs a body or one media URL", "body", "media")
        if self.body is not None and self.media:
            raise FieldError(
                "Instagram takes text and media as separate messages: send the body and the "
                "media in two requests",
                "body",
                "media",
            )
        return self

    def attach(self, attachment: dict[str, Any]) -> None:
        """The attachment the media turned out to be (app/media/outbound.py)."""
        self._attachment = attachment


def _sent_attachment(attachment: dict[str, Any], message_status: str) -> dict[str, Any]:
    """A send's attachment as shown: `pending` until Meta has it (its reusable attachment id
    in `external_id`), `failed` if the message failed before that. One stored before
    reusable attachments was sent by URL: `processed`."""
    status = attachment.get("status", AttachmentStatus.PROCESSED.value)
    if status == AttachmentStatus.PENDING and message_status == "failed":
        status = AttachmentStatus.FAILED.value
    return {**attachment, "status": status}


class RecipientMessageSend(MessageSend):
    """A send to a participant by their IGSID: the chat is found or created on the way."""

    recipient_id: Text = Field(
        pattern=IGSID_PATTERN,
        description="The participant's Instagram-scoped id (IGSID), as Meta gives it: digits",
        examples=["1602510301006188"],
    )


class ErrorDetails(BaseModel):
    platform_error_code: str | None = None
    platform_error_subcode: str | None = None
    platform_error_message: str | None = None


class MessageOut(BaseModel):
    id: str
    chat_id: str
    external_id: str | None
    direction: DirectionName
    body: str | None
    status: StatusName
    tag: str | None
    external_comment_id: str | None = None
    error_message: str | None
    error_details: ErrorDetails | None
    platform_data: dict[str, Any] | None
    external_posted_at: datetime | None
    external_read_at: datetime | None
    external_edited_at: datetime | None
    external_deleted_at: datetime | None
    reply_to_external_id: str | None
    # What an outbound message was sent with (app/messages/interactive.py).
    quick_replies: list[dict[str, Any]] | None = None
    buttons: list[dict[str, Any]] | None = None
    card: dict[str, Any] | None = None
    elements: list[dict[str, Any]] | None = None
    reactions: list[dict[str, Any]] = []
    attachments: list[dict[str, Any]] = []
    is_unsupported: bool = False
    tapped_action: dict[str, Any] | None = None
    story_reply: dict[str, Any] | None = None
    referral: dict[str, Any] | None = None
    created_at: datetime

    @classmethod
    def of(cls, message: Message | MessageRow) -> "MessageOut":
        public_id = ids.encode(ids.Kind.MESSAGE, message.id)
        # Webhook content has `attachments`; an outbound send has its one `attachment`.
        stored = message.attachments
        if stored is None and message.attachment:
            stored = [_sent_attachment(message.attachment, message.status)]
        attachments = [
            {
                "id": f"{public_id}-{index}",
                "type": attachment["type"],
                "url": attachment.get("url"),
                "status": attachment["status"],
                "external_id": attachment.get("external_id"),
            }
            for index, attachment in enumerate(stored or [])
        ]
        reactions = [
            {
                "sender_external_id": sender,
                "reaction": state["reaction"],
                "emoji": state["emoji"],
                "at": state["at"],
            }
            for sender, state in (message.reactions or {}).items()
            if state["action"] == "react"
        ]
        sent_with = message.interactive or {}
        # Built from stored values, which need no validating (validation would be most of
        # the cost of an inbound message's customer event).
        return cls.model_construct(
            id=public_id,
            chat_id=ids.encode(ids.Kind.CHAT, message.chat_id),
            external_id=message.external_id,
            direction=cast(DirectionName, message.direction),
            body=message.body,
            status=cast(StatusName, message.status),
            tag=message.tag,
            external_comment_id=message.external_comment_id,
            error_message=message.error_message,
            error_details=ErrorDetails(**message.error_details) if message.error_details else None,
            platform_data=message.platform_data,
            external_posted_at=message.external_posted_at,
            external_read_at=message.external_read_at,
            external_edited_at=message.external_edited_at,
            external_deleted_at=message.external_deleted_at,
            reply_to_external_id=message.reply_to_external_id,
            quick_replies=sent_with.get("quick_replies"),
            buttons=sent_with.get("buttons"),
            card=sent_with.get("card"),
            elements=sent_with.get("elements"),
            reactions=reactions,
            attachments=attachments,
            is_unsupported=message.is_unsupported,
            tapped_action=message.tapped_action,
            story_reply=message.story_reply,
            referral=message.referral,
            created_at=message.created_at,
        )
