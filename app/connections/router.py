import html
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.api_keys.auth import CurrentScope
from app.connections import service
from app.connections.schemas import ConnectionInit, ConnectionOut
from app.core import ids
from app.core.deps import Session
from app.core.errors import APIError
from app.core.idempotency import Idempotency

router = APIRouter(tags=["connections"])
CALLBACK_PATH = "/connect/instagram/callback"


@router.post(
    "/profile_groups/{group_id}/initialize_connection",
    operation_id="profile_groups_initialize_connection",
    summary="Start connecting an Instagram account to a group",
    response_model=ConnectionOut,
)
async def initialize_connection(
    group_id: str,
    fields: ConnectionInit,
    request: Request,
    scope: CurrentScope,
    session: Session,
    idempotency: Idempotency,
) -> Response:
    state = request.app.state
    url = await service.initialize(session, scope, state.settings, state.graph, group_id, fields)
    # A retried POST (same Idempotency-Key) gets the same link, not a second pending one.
    return await idempotency.remember(session, 200, ConnectionOut(url=url, success=True))


callback_router = APIRouter(tags=["connections"])


@callback_router.get(CALLBACK_PATH, include_in_schema=False)
async def instagram_callback(request: Request, session: Session) -> Response:
    """Where Instagram's authorize page sends the browser back."""
    state = request.app.state
    params = dict(request.query_params)
    try:
        connected = await service.complete(session, state.settings, state.graph, params)
    except service.Refused as refused:
        if refused.redirect_url is None:
            raise APIError(400, refused.reason) from refused
        back = _with_query(refused.redirect_url, {"success": "false", "error": refused.reason})
        return RedirectResponse(back, status_code=302)
    profile_id = ids.encode(ids.Kind.PROFILE, connected.profile.id)
    if connected.redirect_url is None:
        name = connected.profile.username or connected.profile.platform_id
        return HTMLResponse(f"<p>Instagram account {html.escape(name)} is connected.</p>")
    back = _with_query(connected.redirect_url, {"success": "true", "profile_id": profile_id})
    return RedirectResponse(back, status_code=302)


def _with_query(url: str, added: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), *added.items()])
    return urlunsplit(parts._replace(query=query))
