from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr, model_validator

from app.core.errors import FieldError
from app.messages import interactive
from app.messages.schemas import MessageText


class PrivateReplyIn(BaseModel):
    """A private reply: text, with the interactive content a send takes."""

    model_config = ConfigDict(extra="forbid")

    text: MessageText | None = None
    quick_replies: interactive.QuickReplies | None = None
    buttons: interactive.Buttons | None = None
    card: interactive.CardIn | None = None
    elements: interactive.Elements | None = None
    _interactive: dict[str, Any] | None = PrivateAttr(default=None)

    @property
    def interactive(self) -> dict[str, Any] | None:
        return self._interactive

    @model_validator(mode="after")
    def _check_meta_rules(self) -> "PrivateReplyIn":
        content = interactive.Interactive.model_construct(
            **{name: getattr(self, name) for name in interactive.FIELDS}
        )
        content.check(self.text, False, body_field="text")
        self._interactive = content.stored()
        if self.text is None and self.elements is None:
            raise FieldError("a private reply needs text (or elements)", "text")
        return self
