"""Media a client sends: its type told from its content, checked against Meta's formats and
sizes, and uploaded files stored where dmrelay serves them to Meta.

A send's media is an http(s) URL, a base64 `data:` URI (JSON) or a file part (multipart).
Files are read here; a URL is asked about with one ranged GET (app/media/download.py:probe,
public addresses only, MEDIA_PROBE_TIMEOUT_SECONDS at most), so that an extension-less CDN
URL works and a wrong file is refused now, with a 422, rather than by Meta later. A server
that does not answer in time leaves the URL's extension to tell the type, and Meta to judge.

The attachment a send stores: {type, url, status, content_key, content_type?, size?,
storage_key?}. `content_key` names the file for reusable attachments
(app/media/attachments.py): the SHA-256 of its bytes when dmrelay has them, else of the URL
and the version its server gives (ETag, Last-Modified, size).
"""

import asyncio
import base64
import binascii
import hashlib
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlparse

import httpx

from app.core.addresses import Resolver
from app.core.errors import Unprocessable
from app.core.settings import Settings
from app.media.download import PROBE_BYTES, DownloadError, probe
from app.media.models import AttachmentStatus
from app.media.storage import MediaStore

if TYPE_CHECKING:
    from app.messages.schemas import MessageSend

# A multipart send's file part stands in `media` as this, followed by its index
# (app/messages/router.py); a JSON body cannot name one (app/messages/schemas.py).
UPLOAD_MARKER = "upload:"

MB = 1024 * 1024
# How long, and for how many URLs, the API trusts what a URL's server said (MediaTools).
KNOWN_SECONDS = 60.0
KNOWN_URLS = 4096
# Meta's limits per attachment type (Send API and Attachment Upload API).
MAX_BYTES = {"image": 8 * MB, "video": 25 * MB, "audio": 25 * MB, "file": 25 * MB}


@dataclass(frozen=True)
class Format:
    kind: str  # Meta's attachment type
    name: str  # as Meta's documentation names it
    extension: str  # the stored copy's, which also gives the type it is served with


# What Meta takes, by MIME type (meta-graph-api.md §2.3, §11.5).
FORMATS = {
    "image/png": Format("image", "png", ".png"),
    "image/jpeg": Format("image", "jpeg", ".jpg"),
    "image/gif": Format("image", "gif", ".gif"),
    "video/mp4": Format("video", "mp4", ".mp4"),
    "video/ogg": Format("video", "ogg", ".ogv"),
    "video/x-msvideo": Format("video", "avi", ".avi"),
    "video/quicktime": Format("video", "mov", ".mov"),
    "video/webm": Format("video", "webm", ".webm"),
    "audio/aac": Format("audio", "aac", ".aac"),
    "audio/mp4": Format("audio", "m4a", ".m4a"),
    "audio/wav": Format("audio", "wav", ".wav"),
    "application/pdf": Format("file", "pdf", ".pdf"),
}
ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "audio/x-m4a": "audio/mp4",
    "audio/m4a": "audio/mp4",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/x-aac": "audio/aac",
    "audio/ogg": "video/ogg",  # Meta lists ogg under video only
    "application/ogg": "video/ogg",
    "video/avi": "video/x-msvideo",
}
# For a URL whose server could not be asked: what its extension says.
BY_EXTENSION = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "avi": "video/x-msvideo",
    "webm": "video/webm",
    "ogg": "video/ogg",
    "ogv": "video/ogg",
    "aac": "audio/aac",
    "m4a": "audio/mp4",
    "wav": "audio/wav",
    "pdf": "application/pdf",
}
# ISO base media (ftyp) brands of audio-only files; any other brand is video.
AUDIO_BRANDS = (b"M4A ", b"M4B ", b"M4P ", b"F4A ")


def accepted_formats() -> str:
    kinds: dict[str, list[str]] = {}
    for media_format in FORMATS.values():
        kinds.setdefault(media_format.kind, []).append(media_format.name)
    limits = "; ".join(
        f"{kind} ({', '.join(names)}, up to {MAX_BYTES[kind] // MB} MB)"
        for kind, names in kinds.items()
    )
    return f"Instagram takes {limits}"


def sniff(head: bytes) -> str | None:
    """The MIME type a file's first bytes show, among the formats Meta takes or commonly
    confused with them; None if they show none."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in AUDIO_BRANDS:
            return "audio/mp4"
        return "video/quicktime" if brand == b"qt  " else "video/mp4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "video/quicktime"  # QuickTime from before ftyp
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if head.startswith(b"OggS"):
        return "video/ogg"
    if head.startswith(b"RIFF") and head[8:12] in (b"AVI ", b"WAVE", b"WEBP"):
        return {b"AVI ": "video/x-msvideo", b"WAVE": "audio/wav", b"WEBP": "image/webp"}[head[8:12]]
    if head[:2] in (b"\xff\xf1", b"\xff\xf9"):
        return "audio/aac"  # ADTS
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    return None


def _declared(content_type: str | None) -> str | None:
    if not content_type:
        return None
    mime = content_type.split(";")[0].strip().lower()
    return ALIASES.get(mime, mime)


def media_format(head: bytes, content_type: str | None, what: str, field: str) -> Format:
    """The format of a file, by its bytes first and its declared type (a server's
    Content-Type; None for a client's file, whose declared type is only its name's guess)
    only when the bytes show none; a 422 if Meta takes neither."""
    mime = sniff(head) or _declared(content_type)
    found = FORMATS.get(mime or "")
    if found is None:
        shown = (
            f"is {mime}, which Instagram does not take"
            if mime and mime != "application/octet-stream"
            else "is of no type Instagram takes"
        )
        raise Unprocessable(f"{field}: {what} {shown}. {accepted_formats()}.", field)
    return found


def check_size(media_format: Format, size: int | None, what: str, field: str) -> None:
    limit = MAX_BYTES[media_format.kind]
    if size is not None and size > limit:
        raise Unprocessable(
            f"{field}: {what} is a {media_format.name} {media_format.kind} of {size} bytes; "
            f"Instagram takes {media_format.kind}s up to {limit // MB} MB ({limit} bytes).",
            field,
        )


async def from_url(
    http: httpx.AsyncClient, url: str, settings: Settings, resolver: Resolver, field: str
) -> dict[str, Any]:
    """The attachment for a media URL, its type told by its server's answer."""
    what = f"the media at {url}"
    try:
        answer = await probe(http, url, settings, resolver, settings.media_probe_timeout_seconds)
    except DownloadError as error:
        if not error.transient:  # refused: not public, a port not allowed, a 4xx
            raise Unprocessable(f"{field}: {what} cannot be sent: {error}.", field) from error
        return _by_extension(url, field, f"{what} could not be checked ({error})")
    found = media_format(answer.head, answer.content_type, what, field)
    check_size(found, answer.size, what, field)
    version = f"{url}\n{answer.version}\n{answer.size}"
    return {
        "type": found.kind,
        "url": url,
        "status": AttachmentStatus.PENDING.value,
        "content_type": _mime_of(found),
        "size": answer.size,
        "content_key": "url:" + hashlib.sha256(version.encode()).hexdigest(),
    }


def _by_extension(url: str, field: str, why: str) -> dict[str, Any]:
    path = urlparse(url).path
    extension = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    mime = BY_EXTENSION.get(extension)
    if mime is None:
        raise Unprocessable(
            f"{field}: cannot tell the media type of {url}: {why}, and its name has no "
            f"extension Instagram takes. {accepted_formats()}.",
            field,
        )
    return {
        "type": FORMATS[mime].kind,
        "url": url,
        "status": AttachmentStatus.PENDING.value,
        "content_type": mime,
        "content_key": "url:" + hashlib.sha256(url.encode()).hexdigest(),
    }


def _mime_of(media_format: Format) -> str:
    return next(mime for mime, known in FORMATS.items() if known is media_format)


def decode_data_uri(uri: str) -> bytes:
    """The bytes of a base64 `data:` URI (its declared type is not trusted: the bytes tell);
    ValueError saying what is wrong."""
    header, comma, data = uri.partition(",")
    if not comma or not header.lower().endswith(";base64"):
        raise ValueError("a data: URI must be base64: data:<type>;base64,<data>")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"its base64 data does not decode ({error})") from error


async def from_file(store: MediaStore, file: BinaryIO, what: str, field: str) -> dict[str, Any]:
    """Store a file (read from its start, in chunks) and give its attachment: dmrelay serves
    it at the store's URL, which is what Meta is handed."""
    file.seek(0)
    head = file.read(PROBE_BYTES)
    # The bytes alone: a client's declared type is a guess from the file's name.
    found = media_format(head, None, what, field)
    digest, size = hashlib.sha256(head), len(head)
    limit = MAX_BYTES[found.kind]
    while chunk := file.read(64 * 1024):
        digest.update(chunk)
        size += len(chunk)
        if size > limit:
            break  # over Meta's limit: no need to read the rest
    check_size(found, size, what, field)
    content_hash = digest.hexdigest()
    # Named by the content: a file sent again is stored once, at the URL Meta already knows.
    key = f"outbound/{content_hash}{found.extension}"
    file.seek(0)
    mime = _mime_of(found)
    url = await store.put_file(key, file, mime)
    return {
        "type": found.kind,
        "url": url,
        "status": AttachmentStatus.PENDING.value,
        "content_type": mime,
        "size": size,
        "content_key": f"sha256:{content_hash}",
        "storage_key": key,
    }


async def from_data_uri(store: MediaStore, uri: str, field: str) -> dict[str, Any]:
    try:
        data = decode_data_uri(uri)
    except ValueError as error:  # the schema checked it; kept for callers that did not
        raise Unprocessable(f"{field}: {error}", field) from error
    return await from_file(store, io.BytesIO(data), "the data: URI's file", field)


@dataclass
class MediaTools:
    """What checking a send's media needs; the API holds one (`app.state.media`), with the
    API's one resolver (`app.state.resolver`, customer webhook URLs' too)."""

    http: httpx.AsyncClient
    settings: Settings
    store: MediaStore
    resolver: Resolver
    # What each URL was found to be, for KNOWN_SECONDS, and the probes under way: a campaign
    # sending one URL to many chats asks its server once, not once per send.
    _known: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    _asking: dict[str, "asyncio.Task[dict[str, Any]]"] = field(default_factory=dict)

    async def url_attachment(self, url: str, field: str) -> dict[str, Any]:
        now = time.monotonic()
        known = self._known.get(url)
        if known is not None and known[0] > now:
            return dict(known[1])
        task = self._asking.get(url)
        if task is None:
            task = asyncio.create_task(
                from_url(self.http, url, self.settings, self.resolver, field)
            )
            self._asking[url] = task
            task.add_done_callback(lambda _: self._asking.pop(url, None))
        # Shielded: one client hanging up must not cancel the others' probe.
        attachment = await asyncio.shield(task)
        if len(self._known) >= KNOWN_URLS:
            self._known.clear()  # a bound on memory; the next sends ask again
        self._known[url] = (now + KNOWN_SECONDS, attachment)
        return dict(attachment)


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart send, spooled by the form parser (memory, then disk)."""

    file: BinaryIO
    filename: str | None


async def attach_media(
    tools: MediaTools, fields: "MessageSend", uploads: Sequence[Upload] = ()
) -> None:
    """Check a send's media (if any) and attach what it is to the send; a 422 if Instagram
    could not take it."""
    if not fields.media:
        return
    item, field = fields.media[0], "media.0"
    if item.startswith(UPLOAD_MARKER):
        upload = uploads[int(item[len(UPLOAD_MARKER) :])]
        what = f"the file {upload.filename!r}" if upload.filename else "the uploaded file"
        attachment = await from_file(tools.store, upload.file, what, "media")
    elif item[:5].lower() == "data:":
        attachment = await from_data_uri(tools.store, item, field)
    else:
        attachment = await tools.url_attachment(item, field)
    fields.attach(attachment)
