"""Media the sandbox serves at /_sandbox/media/{name}: what attachment and profile picture URLs
point to, so dmrelay can mirror them. The bytes depend only on the name's extension."""

import base64
import hashlib
import secrets
from pathlib import PurePath

PNG = base64.b64decode(  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
FORMATS = {
    ".png": ("image/png", PNG),
    ".mp4": ("video/mp4", b"\x00\x00\x00\x1cftypisom\x00\x00\x02\x00isomiso2mp41"),
    ".m4a": ("audio/mp4", b"\x00\x00\x00\x18ftypM4A \x00\x00\x00\x00M4A isom"),
    ".pdf": ("application/pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n%%EOF\n"),
}
EXTENSION_BY_TYPE = {
    "video": ".mp4",
    "ig_reel": ".mp4",
    "reel": ".mp4",
    "audio": ".m4a",
    "file": ".pdf",
}


def content(name: str) -> tuple[str, bytes]:
    """(Content-Type, bytes) for a media name; unknown extensions get opaque bytes."""
    return FORMATS.get(
        PurePath(name).suffix.lower(),
        ("application/octet-stream", hashlib.sha256(name.encode()).digest()),
    )


def url(base_url: str, name: str) -> str:
    """An absolute sandbox media URL; base_url is the request's, ending in '/'."""
    return f"{base_url}_sandbox/media/{name}"


def new_url(base_url: str, attachment_type: str) -> str:
    """A fresh media URL for an attachment of that webhook type."""
    extension = EXTENSION_BY_TYPE.get(attachment_type, ".png")
    name = f"{attachment_type}_{secrets.token_hex(4)}{extension}"
    return url(base_url, name)
