from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from app.core.errors import NotFound
from app.media.storage import LocalStore

router = APIRouter(tags=["media"])

# Customers' files are not ours to trust: never let a browser run them on dmrelay's origin.
SAFE_HEADERS = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}


@router.get("/media/{key:path}", include_in_schema=False)
async def serve_media(key: str, request: Request) -> FileResponse:
    """Mirrored media in the local store; its keys are unguessable, like Meta's CDN links."""
    settings = request.app.state.settings
    if settings.media_store != "local":
        raise NotFound("Media")
    path = LocalStore(Path(settings.media_dir), settings.media_base_url).path_of(key)
    if path is None or not path.is_file():
        raise NotFound("Media")
    return FileResponse(path, headers=SAFE_HEADERS)
