"""What a customer's endpoint receives: the envelope `{id, type, created_at, data}` as the
Postproxy SDK parses it (`postproxy.webhooks.parse_event`), and the headers that sign it
(`verify_signature`: HMAC-SHA256 of "<t>.<raw body>", keyed by the endpoint's secret)."""

import hashlib
import hmac
import json
import secrets
import time
from datetime import datetime
from typing import Any

SECRET_PREFIX = "whsec_"
USER_AGENT = "dmrelay-webhooks/1.0"
SIGNATURE_HEADER = "X-PostProxy-Signature"
EVENT_HEADER = "X-PostProxy-Event"
DELIVERY_HEADER = "X-PostProxy-Delivery"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_hex(24)


def body(event_id: str, type: str, created_at: datetime, data: dict[str, Any]) -> bytes:
    envelope = {"id": event_id, "type": type, "created_at": created_at.isoformat(), "data": data}
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


def signature(secret: str, payload: bytes, timestamp: int | None = None) -> str:
    """The X-PostProxy-Signature value: `t=<unix seconds>,v1=<hex HMAC>`."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def headers(secret: str, payload: bytes, type: str, dispatch_id: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: signature(secret, payload),
        EVENT_HEADER: type,
        DELIVERY_HEADER: dispatch_id,
    }
