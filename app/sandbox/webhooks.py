"""Posting webhook bodies to dmrelay, signed the way Meta does it."""

import hashlib
import hmac
import json
import time

import httpx

from app.sandbox.events import Body


def now_ms() -> int:
    return int(time.time() * 1000)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post_event(
    client: httpx.AsyncClient, url: str, secret: str | None, payload: Body
) -> httpx.Response:
    # Meta signs the escaped-unicode bytes, and those exact bytes are the body it sends.
    body = json.dumps(payload, ensure_ascii=True).encode()
    headers = {"Content-Type": "application/json"}
    if secret:  # without an app secret there is nothing to sign with; dmrelay will reject it
        headers["X-Hub-Signature-256"] = sign(secret, body)
    return await client.post(url, content=body, headers=headers)
