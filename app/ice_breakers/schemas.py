from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.core.schemas import Text

MAX_ICE_BREAKERS = 4
# Meta documents no limits for these; a question is shown as a button-sized prompt.
MAX_QUESTION = 80
MAX_PAYLOAD = 1000


class IceBreaker(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: Annotated[Text, Field(min_length=1, max_length=MAX_QUESTION)]
    payload: Annotated[Text, Field(min_length=1, max_length=MAX_PAYLOAD)]


class IceBreakersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ice_breakers: Annotated[list[IceBreaker], Field(min_length=1, max_length=MAX_ICE_BREAKERS)]


class IceBreakersOut(BaseModel):
    ice_breakers: list[IceBreaker]


class SuccessOut(BaseModel):
    success: bool
