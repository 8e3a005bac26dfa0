from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.core.schemas import Text


class ConnectionInit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    platform: Literal["instagram"] = Field(
        description="Only Instagram, with Instagram Login (Facebook Login accounts: the CLI)"
    )
    redirect_url: Text | None = Field(
        default=None, max_length=2048, description="Where the browser goes once it is done"
    )
    refresh_connection: bool | None = None
    onboarding: Literal["instagram"] | None = Field(
        default=None, description="Only Instagram Login; add Facebook Login accounts by the CLI"
    )

    @field_validator("redirect_url")
    @classmethod
    def _absolute_http(cls, url: str | None) -> str | None:
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("must be an absolute http(s) URL")
        return url


class ConnectionOut(BaseModel):
    url: str
    success: bool
