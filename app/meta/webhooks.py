"""Meta's webhook payloads: signature check and the parsing of `messaging` events."""

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SIGNATURE_HEADER = "X-Hub-Signature-256"


def signature_of(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_is_valid(secrets: list[str], body: bytes, header: str | None) -> bool:
    """Meta signs the raw (unicode-escaped) body bytes; compare before any parsing."""
    if not header:
        return False
    return any(hmac.compare_digest(signature_of(s, body), header.lower()) for s in secrets)


def from_meta_time(value: Any) -> datetime | None:
    """Meta's webhook times are milliseconds since the epoch."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    return datetime.fromtimestamp(value / 1000, tz=UTC)


@dataclass(frozen=True)
class MessagingEvent:
    """One item of an entry's `messaging` (or `standby`) list."""

    account_id: str
    sender_id: str
    recipient_id: str
    timestamp: datetime
    raw: dict[str, Any]

    @property
    def message(self) -> dict[str, Any] | None:
        message = self.raw.get("message")
        return message if isinstance(message, dict) else None


def messaging_events(payload: Any) -> Iterator[MessagingEvent]:
    """Every well-formed messaging event of a webhook payload, in payload order."""
    if not isinstance(payload, dict):
        return
    for entry in payload.get("entry") or []:
        if not isinstance(entry, dict):
            continue
        account_id = str(entry.get("id", ""))
        for item in [*(entry.get("messaging") or []), *(entry.get("standby") or [])]:
            if not isinstance(item, dict):
                continue
            sender = (item.get("sender") or {}).get("id")
            recipient = (item.get("recipient") or {}).get("id")
            timestamp = from_meta_time(item.get("timestamp"))
            if sender and recipient and timestamp:
                yield MessagingEvent(account_id, str(sender), str(recipient), timestamp, item)
