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


@router.get("/media/{key:path}", include_in_schema=False)
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
