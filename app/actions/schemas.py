from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from app.core.errors import FieldError
from app.core.schemas import Text

MAX_EMOJI = 16  # code points: a flag or a skin-toned family is several


def _love(reaction: str) -> str:
    if reaction != "love":
        raise ValueError(
            f"Instagram takes the reaction love, not {reaction!r}; send any other reaction "
            "as an emoji"
        )
    return reaction


def _emoji(emoji: str) -> str:
    if any(c.isascii() and (c.isalnum() or c.isspace()) for c in emoji):
        raise ValueError("must be an emoji, such as 😂, not letters, digits or spaces")
    return emoji


class ReactionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reaction: Annotated[Text, AfterValidator(_love)] | None = Field(
        default=None, description="love (Instagram's one named reaction)"
    )
    emoji: (
        Annotated[Text, Field(min_length=1, max_length=MAX_EMOJI), AfterValidator(_emoji)] | None
    ) = None

    @model_validator(mode="after")
    def _one(self) -> "ReactionIn":
        if self.reaction is None and self.emoji is None:
            raise FieldError("give a reaction (love) or an emoji", "reaction", "emoji")
        return self


class AcceptedOut(BaseModel):
    accepted: bool
