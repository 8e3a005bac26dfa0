import mimetypes
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.core.errors import NotFound
from app.media.storage import LocalStore

router = APIRouter(tags=["media"])

# Customers' files are not ours to trust: never let a browser run them on dmrelay's origin.
SAFE_HEADERS = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}
CHUNK_BYTES = 64 * 1024
# What Instagram's attachments are, by their extension (unknown ones: octet-stream).
MEDIA_TYPES = ("image/*", "video/*", "audio/*", "application/pdf", "application/octet-stream")


@router.get(
    "/media/{key:path}",
    operation_id="media_get",
    summary="Download a copy of an inbound attachment",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The file, with the media type of its extension",
            "content": {
                media_type: {"schema": {"type": "string", "format": "binary"}}
                for media_type in MEDIA_TYPES
            },
        },
        404: {"description": "No such file (or media is kept in S3, which serves it)"},
    },
)
async def serve_media(key: str, request: Request) -> StreamingResponse:
    """Mirrored media in the local store; its keys are unguessable, like Meta's CDN links."""
    settings = request.app.state.settings
    if settings.media_store != "local":
        raise NotFound("Media")
    # Opened before answering: an open file outlives its deletion (an unsend erases the
    # copy), so a request that races one is served whole, or is a 404, never cut short.
    file = LocalStore(Path(settings.media_dir), settings.media_base_url).open(key)
    if file is None:
        raise NotFound("Media")
    size = os.fstat(file.fileno()).st_size
    media_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    headers = {**SAFE_HEADERS, "Content-Length": str(size)}
    return StreamingResponse(_chunks(file), media_type=media_type, headers=headers)


async def _chunks(file: BinaryIO) -> AsyncIterator[bytes]:
    with file:
        while chunk := await anyio.to_thread.run_sync(file.read, CHUNK_BYTES):
            yield chunk
