"""Erasing a message its sender unsent, wherever dmrelay keeps a copy of what it said.

Meta's terms require deleting the stored content of an unsent message. Besides the message
row, its text and media are copied into: the customer events recorded about it (linked by
`message_id`), stored Idempotency-Key responses (an outbound message the business unsent), the
raw payloads of inbound events and webhook deliveries, and the media store (its deletion is
recorded with the erasure, so a lost job cannot leave the copy behind). Raw payloads are
dropped once used (repository.claim_webhook_deliveries, store_outcomes), so only those kept
for diagnosis (failed events, unparseable webhook deliveries) are looked through here; a
redelivery of the message after its unsend is ignored (its mid is stored), so nothing comes
back.

Its statements are here rather than in repository.py: they rewrite copies in other
capabilities' tables as much as in inbound's, for this rule alone.
"""

import json
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.events import service as events
from app.inbound.models import (
    EventKind,
    InboundEvent,
    InboundEventStatus,
    WebhookDelivery,
    WebhookDeliveryStatus,
)
from app.media import service as media
from app.messages.models import Message
from app.messages.schemas import MessageOut

# The message columns that hold what it said, and their erased values.
ERASED_ON_UNSEND: dict[str, Any] = {
    "body": None,
    "attachment": None,
    "attachments": None,
    "platform_data": None,
    "story_reply": None,
    "tapped_action": None,
    "referral": None,
    "reactions": None,
}
# The fields of the API's message (MessageOut) that show those columns.
ERASED_FIELDS = (
    "body",
    "attachments",
    "platform_data",
    "story_reply",
    "tapped_action",
    "referral",
    "reactions",
)
# Inbound event kinds whose payload holds the content of the message named by its mid.
CONTENT_KINDS = (EventKind.MESSAGE, EventKind.ECHO, EventKind.POSTBACK, EventKind.EDIT)
# Webhook item keys under which Meta puts a message's content (or an edit's), with its mid.
CONTENT_KEYS = ("message", "message_edit", "postback")

# Customer events copy the message under `message`; a referral event recorded from a message
# (an ad's) carries the message's `referral` instead.
_ERASE_EVENTS = text("""
    UPDATE customer_events SET data = CASE
        WHEN data ? 'message'
            THEN jsonb_set(data, '{message}', (data -> 'message') || CAST(:erased AS jsonb))
        ELSE data || '{"referral": null}'
    END
    WHERE message_id = :message_id
""")

# Stored responses describe a resource by its public id (an index covers it).
_ERASE_RESPONSES = text("""
    UPDATE idempotency_keys SET response = response || CAST(:erased AS jsonb)
    WHERE response ->> 'id' = :public_id
""")


async def erase(session: AsyncSession, message: Message, account_id: str) -> None:
    """Erase the message's content from its row and every copy, in the session's
    transaction; its stored media is deleted once that commits."""
    stored_media = media.stored_keys(message.attachments)
    for column, value in ERASED_ON_UNSEND.items():
        setattr(message, column, value)
    await session.flush()
    # Events recorded in this transaction (the message may have arrived in it) are written
    # first, so that the erasure reaches them too.
    await events.write_recorded(session)
    shown = MessageOut.of(message).model_dump(mode="json")
    erased = json.dumps({field: shown[field] for field in ERASED_FIELDS})
    await session.execute(_ERASE_EVENTS, {"erased": erased, "message_id": message.id})
    await session.execute(_ERASE_RESPONSES, {"erased": erased, "public_id": shown["id"]})
    if message.external_id is not None:
        await _erase_raw_payloads(session, account_id, message.external_id)
    await media.delete_after_commit(session, stored_media)


async def _erase_raw_payloads(session: AsyncSession, account_id: str, mid: str) -> None:
    await session.execute(
        update(InboundEvent)
        .where(
            InboundEvent.account_id == account_id,
            InboundEvent.mid == mid,
            InboundEvent.status == InboundEventStatus.FAILED,
            InboundEvent.kind.in_(CONTENT_KINDS),
        )
        .values(payload=None)
    )
    kept = await session.execute(
        select(WebhookDelivery.id, WebhookDelivery.body).where(
            WebhookDelivery.status == WebhookDeliveryStatus.UNPARSEABLE,
            func.strpos(WebhookDelivery.body, mid) > 0,
        )
    )
    for webhook_delivery_id, body in kept.all():
        if body is None:  # none is: strpos would be NULL
            continue
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == webhook_delivery_id)
            .values(body=redact_body(body, mid))
        )


def redact_body(body: str, mid: str) -> str | None:
    """A kept webhook delivery's body with the content of this mid's message (and its edits) left
    out; None if it is not JSON, and so cannot be redacted item by item."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    return json.dumps(_redacted(payload, mid))


def _redacted(value: Any, mid: str) -> Any:
    if isinstance(value, list):
        return [_redacted(item, mid) for item in value]
    if not isinstance(value, dict):
        return value
    return {
        key: {"mid": mid}
        if key in CONTENT_KEYS and isinstance(item, dict) and item.get("mid") == mid
        else _redacted(item, mid)
        for key, item in value.items()
    }
