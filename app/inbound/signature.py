"""The signature Meta puts on every webhook POST."""

import hashlib
import hmac

SIGNATURE_HEADER = "X-Hub-Signature-256"


def signature_of(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_is_valid(secrets: list[str], body: bytes, header: str | None) -> bool:
    """Meta signs the raw (unicode-escaped) body bytes; compare before any parsing."""
    if not header:
        return False
    # As bytes: compare_digest refuses str holding anything but ASCII, and a header's value
    # is whatever the client sent.
    given = header.lower().encode("utf-8", "surrogatepass")
    return any(hmac.compare_digest(signature_of(s, body).encode(), given) for s in secrets)
