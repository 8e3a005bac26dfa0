"""Webhook events the sandbox posts to dmrelay, built and signed the way Meta does it."""

import hashlib
import hmac
import json
import time

import httpx


def now_ms() -> int:
    return int(time.time() * 1000)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def envelope(account_id: str, sender: str, recipient: str, message: dict, timestamp: int) -> dict:
    event = {
        "sender": {"id": sender},
        "recipient": {"id": recipient},
        "timestamp": timestamp,
        "message": message,
    }
    return {
        "object": "instagram",
        "entry": [{"id": account_id, "time": timestamp, "messaging": [event]}],
    }


def echo_message(mid: str, sent: dict) -> dict:
    """The echo of a message the business sent; webhooks always carry an `attachments` list."""
    content = dict(sent)
    if "attachment" in content:
        content["attachments"] = [content.pop("attachment")]
    return {"mid": mid, "is_echo": True, **content}


async def post_event(
    client: httpx.AsyncClient, url: str, secret: str | None, payload: dict
) -> httpx.Response:
    # Meta signs the escaped-unicode bytes, and those exact bytes are the body it sends.
    body = json.dumps(payload, ensure_ascii=True).encode()
    headers = {"Content-Type": "application/json"}
    if secret:  # without an app secret there is nothing to sign with; dmrelay will reject it
        headers["X-Hub-Signature-256"] = sign(secret, body)
    return await client.post(url, content=body, headers=headers)
