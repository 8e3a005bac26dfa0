"""The `state` of a connection link: which group the account joins and where the browser goes
next, signed (HMAC-SHA256, a key derived from SECRET_KEY) and expiring, so that a callback
cannot be forged, altered or replayed late."""

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass


class BadState(Exception):
    """The callback's state is missing, altered, not ours, or too old: a sentence why."""


@dataclass(frozen=True)
class ConnectState:
    profile_group_id: int
    redirect_url: str | None


def _key(secret_key: str) -> bytes:
    # A key of its own, so that a state can never stand for anything else SECRET_KEY signs.
    return hashlib.sha256(b"dmrelay connect state\0" + secret_key.encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(secret_key: str, state: ConnectState, lifetime_seconds: int) -> str:
    payload = {
        "g": state.profile_group_id,
        "r": state.redirect_url,
        "x": int(time.time()) + lifetime_seconds,
        "n": secrets.token_urlsafe(8),
    }
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    mac = hmac.new(_key(secret_key), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def verify(secret_key: str, signed: str | None) -> ConnectState:
    if not signed:
        raise BadState("the callback has no state: start again from initialize_connection")
    body, _, mac = signed.partition(".")
    expected = _b64(hmac.new(_key(secret_key), body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        raise BadState("the callback's state was altered or was not made by this dmrelay")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    if payload["x"] < time.time():
        raise BadState("the connection link has expired: start again from initialize_connection")
    return ConnectState(profile_group_id=payload["g"], redirect_url=payload["r"])
