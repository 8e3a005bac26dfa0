"""Interactive content of a send: quick replies, buttons, a card and carousel elements, as the
Postproxy SDK sends them (`_types.QuickReply`, `MessageButton`, `MessageCard`,
`MessageElement`), checked against Meta's limits (meta doc §11.1, §11.2), stored as sent and
turned into Meta's `quick_replies` and generic template at send time (`meta_message`).

Rules: quick replies ≤ 13 (title ≤ 20, payload ≤ 1000) and need a body; buttons ≤ 3, each
`web_url` (https) or `postback` (a payload), sent as a generic template whose title is the body
(≤ 80); a card needs buttons; elements (a carousel, ≤ 10) go alone, without body, buttons or
card. On Instagram quick replies go with text only: not with media, buttons or elements."""

from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from app.core.errors import FieldError
from app.core.schemas import Text

MAX_QUICK_REPLIES = 13
MAX_QUICK_REPLY_TITLE = 20
MAX_PAYLOAD = 1000
MAX_BUTTONS = 3
MAX_BUTTON_TITLE = 20
MAX_ELEMENTS = 10
MAX_TEMPLATE_TEXT = 80  # an element's title and subtitle
BUTTON_TYPES = ("web_url", "postback")
# The send fields this module owns, in the order the API shows them.
FIELDS = ("quick_replies", "buttons", "card", "elements")


def _https(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme != "https" or not parsed.hostname:
        raise ValueError(f"must be an https URL, not {url!r}")
    return url


HttpsURL = Annotated[Text, Field(max_length=2048), AfterValidator(_https)]
Payload = Annotated[Text, Field(min_length=1, max_length=MAX_PAYLOAD)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuickReplyIn(_Strict):
    content_type: Literal["text"] = "text"
    title: Annotated[Text, Field(min_length=1, max_length=MAX_QUICK_REPLY_TITLE)]
    payload: Payload


class ButtonIn(_Strict):
    # A plain string in the SDK (a new Meta type needs no SDK release); Instagram takes two.
    type: Text
    title: Annotated[Text, Field(min_length=1, max_length=MAX_BUTTON_TITLE)]
    url: HttpsURL | None = None
    payload: Payload | None = None

    @model_validator(mode="after")
    def _complete(self) -> "ButtonIn":
        if self.type not in BUTTON_TYPES:
            raise ValueError(
                f"type must be web_url or postback (Instagram's buttons), not {self.type!r}"
            )
        if self.type == "web_url" and self.url is None:
            raise ValueError("a web_url button needs an https url")
        if self.type == "postback" and self.payload is None:
            raise ValueError("a postback button needs a payload")
        return self


class DefaultActionIn(_Strict):
    type: Literal["web_url"]
    url: HttpsURL


TemplateText = Annotated[Text, Field(min_length=1, max_length=MAX_TEMPLATE_TEXT)]


class CardIn(_Strict):
    subtitle: TemplateText | None = None
    image_url: HttpsURL | None = None
    default_action: DefaultActionIn | None = None


class ElementIn(_Strict):
    title: TemplateText
    subtitle: TemplateText | None = None
    image_url: HttpsURL | None = None
    default_action: DefaultActionIn | None = None
    buttons: Annotated[list[ButtonIn], Field(min_length=1, max_length=MAX_BUTTONS)] | None = None

    @model_validator(mode="after")
    def _not_title_alone(self) -> "ElementIn":
        if (self.subtitle, self.image_url, self.default_action, self.buttons) == (None,) * 4:
            raise ValueError(
                "an element needs a subtitle, image_url, default_action or buttons besides its "
                "title"
            )
        return self


QuickReplies = Annotated[list[QuickReplyIn], Field(min_length=1, max_length=MAX_QUICK_REPLIES)]
Buttons = Annotated[list[ButtonIn], Field(min_length=1, max_length=MAX_BUTTONS)]
Elements = Annotated[list[ElementIn], Field(min_length=1, max_length=MAX_ELEMENTS)]


class Interactive(_Strict):
    """The interactive fields of a send, as given (None when absent)."""

    quick_replies: QuickReplies | None = None
    buttons: Buttons | None = None
    card: CardIn | None = None
    elements: Elements | None = None

    def check(self, body: str | None, has_media: bool, body_field: str = "body") -> None:
        """The rules between fields (FieldError naming them; the text is `body_field`)."""
        if self.card is not None and self.buttons is None:
            raise FieldError("a card needs buttons: it is the template that carries them", "card")
        if self.elements is not None:
            given = [n for n, v in ((body_field, body), ("buttons", self.buttons),
                                    ("card", self.card)) if v is not None]  # fmt: skip
            if given:
                raise FieldError(
                    f"elements (a carousel) cannot be sent with {', '.join(given)}",
                    "elements",
                    *given,
                )
        if self.quick_replies is not None:
            if has_media or self.buttons is not None or self.elements is not None:
                raise FieldError(
                    "on Instagram, quick replies go with text only, not with media, buttons or "
                    "elements",
                    "quick_replies",
                )
            if body is None:
                raise FieldError(
                    f"quick replies need a {body_field}: the text they answer", body_field
                )
        if self.buttons is not None:
            if has_media:
                raise FieldError("buttons cannot be sent with media", "buttons", "media")
            if body is None:
                raise FieldError(
                    f"buttons need a {body_field}: it is the title of the template that "
                    "carries them",
                    body_field,
                )
            if len(body) > MAX_TEMPLATE_TEXT:
                raise FieldError(
                    f"with buttons, the {body_field} is the template's title: at most "
                    f"{MAX_TEMPLATE_TEXT} characters, not {len(body)}",
                    body_field,
                )
        if self.elements is not None and has_media:
            raise FieldError("elements cannot be sent with media", "elements", "media")

    def stored(self) -> dict[str, Any] | None:
        """What the message keeps (and shows) of it: the fields given, unset ones left out."""
        kept = {name: getattr(self, name) for name in FIELDS if getattr(self, name) is not None}
        if not kept:
            return None
        return {
            name: (
                [item.model_dump(exclude_none=True) for item in value]
                if isinstance(value, list)
                else value.model_dump(exclude_none=True)
            )
            for name, value in kept.items()
        }


def meta_message(body: str | None, interactive: dict[str, Any]) -> dict[str, Any]:
    """The Send API's `message` for a send with interactive content (as `stored` keeps it)."""
    if "elements" in interactive:
        return _generic([_element(e) for e in interactive["elements"]])
    if "buttons" in interactive:
        element = {"title": body, **interactive.get("card", {}), "buttons": interactive["buttons"]}
        return _generic([_element(element)])
    message: dict[str, Any] = {"text": body}
    if "quick_replies" in interactive:
        message["quick_replies"] = [
            {"content_type": "text", "title": qr["title"], "payload": qr["payload"]}
            for qr in interactive["quick_replies"]
        ]
    return message


def _element(element: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in element.items() if value is not None}


def _generic(elements: list[dict[str, Any]]) -> dict[str, Any]:
    payload = {"template_type": "generic", "elements": elements}
    return {"attachment": {"type": "template", "payload": payload}}
