from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.core import ids
from app.core.schemas import Text
from app.events.models import CustomerEventType
from app.webhooks.models import CustomerWebhook, DispatchAttempt

MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 1000
EVENT_TYPES = [t.value for t in CustomerEventType]


def _known_events(events: list[str]) -> list[str]:
    for index, name in enumerate(events):
        if name not in EVENT_TYPES:
            raise ValueError(
                f"events.{index}: {name!r} is not an event type dmrelay sends; "
                f"the types are {', '.join(EVENT_TYPES)}"
            )
    # Each once, in the order given.
    return list(dict.fromkeys(events))


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Text = Field(min_length=1, max_length=MAX_URL_LENGTH)
    events: list[Text] = Field(min_length=1, max_length=len(EVENT_TYPES) * 2)
    description: Text | None = Field(default=None, max_length=MAX_DESCRIPTION_LENGTH)

    _events = field_validator("events")(_known_events)


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Text | None = Field(default=None, min_length=1, max_length=MAX_URL_LENGTH)
    events: list[Text] | None = Field(default=None, min_length=1, max_length=len(EVENT_TYPES) * 2)
    enabled: bool | None = None
    description: Text | None = Field(default=None, max_length=MAX_DESCRIPTION_LENGTH)

    @field_validator("events")
    @classmethod
    def _events(cls, events: list[str] | None) -> list[str] | None:
        return None if events is None else _known_events(events)


class WebhookTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_type: Literal[tuple(EVENT_TYPES)] | None = Field(  # type: ignore[valid-type]
        default=None,
        description="The type of the sample event; by default, the endpoint's first",
    )


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    enabled: bool
    description: str | None
    # Only when the endpoint is created: keep it to check signatures.
    secret: str | None = None
    disabled_reason: str | None
    profile_group_id: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, webhook: CustomerWebhook, secret: str | None = None) -> "WebhookOut":
        group = webhook.profile_group_id
        return cls(
            id=ids.encode(ids.Kind.WEBHOOK, webhook.id),
            url=webhook.url,
            events=webhook.events,
            enabled=webhook.enabled,
            description=webhook.description,
            secret=secret,
            disabled_reason=webhook.disabled_reason,
            profile_group_id=None if group is None else ids.encode(ids.Kind.PROFILE_GROUP, group),
            created_at=webhook.created_at,
            updated_at=webhook.updated_at,
        )


class WebhookDeliveryOut(BaseModel):
    id: str
    event_id: str
    event_type: str
    response_status: int | None
    attempt_number: int
    success: bool
    attempted_at: datetime
    created_at: datetime
    # The first characters of the endpoint's answer, or why there was none.
    response_excerpt: str | None
    error: str | None
    duration_ms: int | None

    @classmethod
    def of(cls, attempt: DispatchAttempt) -> "WebhookDeliveryOut":
        return cls(
            id=ids.encode(ids.Kind.WEBHOOK_DELIVERY, attempt.id),
            event_id=attempt.event_public_id,
            event_type=attempt.event_type,
            response_status=attempt.response_status,
            attempt_number=attempt.attempt_number,
            success=attempt.success,
            attempted_at=attempt.attempted_at,
            created_at=attempt.created_at,
            response_excerpt=attempt.response_excerpt,
            error=attempt.error,
            duration_ms=attempt.duration_ms,
        )


class AcceptedOut(BaseModel):
    accepted: bool
    # The event queued for the endpoint (as its envelope's `id` will say) and its type.
    event_id: str
    event_type: str


class DeletedOut(BaseModel):
    deleted: bool
