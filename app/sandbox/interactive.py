"""Quick replies and templates as the sandbox's Send API checks them (meta doc §11.1, §11.2):
what Meta documents is taken, the rest refused with code 100 (Meta's codes for these are
undocumented: §11.8's stand-ins)."""

from typing import Any, NoReturn

from app.sandbox.errors import GraphError
from app.sandbox.events import JSONObject

MAX_QUICK_REPLIES = 13
QUICK_REPLY_TITLE = 20  # longer titles are cut, not refused
# Contact-information quick replies: no longer created on Instagram (dropped, §11.1).
DROPPED_QUICK_REPLIES = {"user_phone_number", "user_email"}
MAX_PAYLOAD = 1000
MAX_ELEMENTS = 10
MAX_BUTTONS = 3
TEMPLATE_TEXT = 80
BUTTON_TITLE = 20
BUTTON_TEXT = 640
INVALID_TEMPLATE = 2534015


def quick_replies(message: JSONObject) -> None:
    """Check the message's quick replies, cut titles to 20 and drop contact ones (in place)."""
    items = message.get("quick_replies")
    if items is None:
        return
    if not isinstance(items, list) or not items:
        raise GraphError(100, "(#100) Param message[quick_replies] must be a non-empty array")
    if len(items) > MAX_QUICK_REPLIES:
        raise GraphError(100, "(#105) param message quick_replies has too many elements")
    if "attachment" in message or "attachments" in message:
        raise GraphError(100, "(#100) Quick replies can only be sent with text on Instagram")
    kept = []
    for index, item in enumerate(items):
        kind = item.get("content_type") if isinstance(item, dict) else None
        if kind in DROPPED_QUICK_REPLIES:
            continue
        title, payload = item.get("title"), item.get("payload")
        if kind != "text" or not (isinstance(title, str) and title):
            raise GraphError(
                100,
                f"(#100) Param message[quick_replies][{index}] needs content_type text "
                "and a title",  # fmt: skip
            )
        if not (isinstance(payload, str | int) and 0 < len(str(payload)) <= MAX_PAYLOAD):
            raise GraphError(
                100,
                f"(#100) Param message[quick_replies][{index}][payload] must be 1 to "
                f"{MAX_PAYLOAD} characters",  # fmt: skip
            )
        kept.append({"content_type": "text", "title": title[:QUICK_REPLY_TITLE],
                     "payload": str(payload)})  # fmt: skip
    message["quick_replies"] = kept


def template(payload: Any) -> None:
    """Check a `template` attachment's payload: generic or button (§11.2)."""
    kind = payload.get("template_type") if isinstance(payload, dict) else None
    if kind == "generic":
        elements = payload.get("elements")
        if not (isinstance(elements, list) and 0 < len(elements) <= MAX_ELEMENTS):
            _invalid(f"elements must hold 1 to {MAX_ELEMENTS} elements")
        for index, element in enumerate(elements):
            _element(index, element)
    elif kind == "button":
        text = payload.get("text")
        if not (isinstance(text, str) and 0 < len(text) <= BUTTON_TEXT):
            _invalid(f"text must be 1 to {BUTTON_TEXT} characters")
        _buttons("buttons", payload.get("buttons"), required=True)
    else:
        _invalid("template_type must be generic or button")


def _element(index: int, element: Any) -> None:
    where = f"elements[{index}]"
    if not isinstance(element, dict):
        _invalid(f"{where} must be an object")
    title = element.get("title")
    if not (isinstance(title, str) and 0 < len(title) <= TEMPLATE_TEXT):
        _invalid(f"{where}[title] must be 1 to {TEMPLATE_TEXT} characters")
    subtitle = element.get("subtitle")
    if subtitle is not None and not (isinstance(subtitle, str) and len(subtitle) <= TEMPLATE_TEXT):
        _invalid(f"{where}[subtitle] must be at most {TEMPLATE_TEXT} characters")
    if not any(element.get(k) for k in ("subtitle", "image_url", "default_action", "buttons")):
        _invalid(f"{where} needs a property besides its title")
    action = element.get("default_action")
    if action is not None and not (
        isinstance(action, dict) and action.get("type") == "web_url" and action.get("url")
    ):
        _invalid(f"{where}[default_action] must be a web_url with a url")
    _buttons(f"{where}[buttons]", element.get("buttons"), required=False)


def _buttons(where: str, buttons: Any, *, required: bool) -> None:
    if buttons is None and not required:
        return
    if not (isinstance(buttons, list) and 0 < len(buttons) <= MAX_BUTTONS):
        _invalid(f"{where} must hold 1 to {MAX_BUTTONS} buttons")
    for index, button in enumerate(buttons):
        kind = button.get("type") if isinstance(button, dict) else None
        title = button.get("title") if isinstance(button, dict) else None
        if not (isinstance(title, str) and 0 < len(title) <= BUTTON_TITLE):
            _invalid(f"{where}[{index}][title] must be 1 to {BUTTON_TITLE} characters")
        if kind == "web_url" and button.get("url"):
            continue
        payload = button.get("payload")
        if kind == "postback" and isinstance(payload, str) and 0 < len(payload) <= MAX_PAYLOAD:
            continue
        _invalid(
            f"{where}[{index}] must be a web_url with a url or a postback with a payload of at "
            f"most {MAX_PAYLOAD} characters"
        )


def _invalid(problem: str) -> NoReturn:
    raise GraphError(100, f"(#100) Invalid template: {problem}", INVALID_TEMPLATE)
