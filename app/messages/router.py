from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.routing import Match
from starlette.types import Scope as ASGIScope

from app.api_keys.auth import CurrentScope, Scope
from app.chats.service import find_chat
from app.core.deps import Session
from app.core.errors import APIError
from app.core.idempotency import Idempotency, IdempotentRequest
from app.core.pagination import Page, Pagination
from app.media.outbound import UPLOAD_MARKER, Upload, attach_media
from app.messages import service
from app.messages.schemas import (
    DirectionName,
    MessageOut,
    MessageSend,
    RecipientMessageSend,
    StatusName,
)

# A send has one attachment: a form with more parts than this is not one.
MAX_PARTS = 16

router = APIRouter(tags=["messages"])


@router.get(
    "/chats/{chat_id}/messages",
    response_model=Page[MessageOut],
    operation_id="messages_list",
    summary="List a chat's messages, newest first",
)
async def list_messages(
    chat_id: str,
    scope: CurrentScope,
    session: Session,
    page: Pagination,
    direction: Annotated[DirectionName | None, Query()] = None,
    status: Annotated[StatusName | None, Query()] = None,
) -> Page[MessageOut]:
    chat, _ = await find_chat(session, scope, chat_id)
    messages, total = await service.list_messages(session, chat, page, direction, status)
    return Page.of([MessageOut.of(m) for m in messages], total, page)


class MultipartRoute(APIRoute):
    """A route that takes only multipart/form-data requests, so that a path's JSON route
    (declared after it) keeps every other request, and its documentation."""

    def matches(self, scope: ASGIScope) -> tuple[Match, ASGIScope]:
        match, child = super().matches(scope)
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"")
        if match is Match.NONE or not content_type.lower().startswith(b"multipart/form-data"):
            return Match.NONE, {}
        return match, child


async def send_message_files(
    chat_id: str,
    request: Request,
    scope: CurrentScope,
    session: Session,
    idempotency: Idempotency,
) -> Response:
    """The SDK's `media_files` send: the form's fields as the JSON send's, and `media[]`
    parts that are files or URLs (one in all). The parser spools each file to disk past a
    megabyte, and MEDIA_UPLOAD_MAX_BYTES caps the whole body (app/core/edge.py)."""
    try:
        form = await request.form(max_files=MAX_PARTS, max_fields=MAX_PARTS)
    except (MultiPartException, HTTPException) as error:
        detail = getattr(error, "message", None) or getattr(error, "detail", str(error))
        raise APIError(400, f"The multipart body cannot be read: {detail}") from error
    try:
        fields = _multipart_send(form)
        uploads = [
            Upload(part.file, part.filename)
            for part in form.getlist("media[]")
            if isinstance(part, UploadFile)
        ]
        await attach_media(request.app.state.media, fields, uploads)
        return await _accept(session, scope, chat_id, fields, idempotency)
    finally:
        await form.close()  # the spooled files


def _multipart_send(form: FormData) -> MessageSend:
    """The send a form describes, validated as a JSON one; a file part stands in `media`
    as its UPLOAD_MARKER."""
    data: dict[str, Any] = {k: v for k, v in form.multi_items() if k != "media[]"}
    files = 0
    media: list[str] = []
    for part in form.getlist("media[]"):
        if isinstance(part, UploadFile):
            media.append(f"{UPLOAD_MARKER}{files}")
            files += 1
        else:
            media.append(str(part))
    if media:
        data["media"] = media
    try:
        return MessageSend.model_validate(data, context={"uploads": files})
    except ValidationError as error:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in error.errors()]
        ) from error


router.add_api_route(
    "/chats/{chat_id}/messages",
    send_message_files,
    methods=["POST"],
    status_code=202,
    response_model=MessageOut,
    include_in_schema=False,  # documented with the JSON route, as its multipart form
    route_class_override=MultipartRoute,
)

# The send's multipart form, as Postproxy's SDK sends it (documented on the JSON route).
MULTIPART_SEND = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "body": {"type": "string"},
                        "tag": {"type": "string", "enum": ["HUMAN_AGENT"]},
                        "reply_to_external_id": {"type": "string"},
                        "media[]": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "One file, or one media URL",
                        },
                    },
                }
            }
        }
    }
}


@router.post(
    "/chats/{chat_id}/messages",
    response_model=MessageOut,
    status_code=202,
    operation_id="messages_send",
    summary="Send a message in a chat",
    openapi_extra=MULTIPART_SEND,
)
async def send_message(
    chat_id: str,
    fields: MessageSend,
    request: Request,
    scope: CurrentScope,
    session: Session,
    idempotency: Idempotency,
) -> Response:
    """Accept a message to send: it is `pending` until a worker hands it to Meta. Its media
    is checked first (app/media/outbound.py)."""
    await attach_media(request.app.state.media, fields)
    return await _accept(session, scope, chat_id, fields, idempotency)


async def _accept(
    session: AsyncSession,
    scope: Scope,
    chat_id: str,
    fields: MessageSend,
    idempotency: IdempotentRequest,
) -> Response:
    # With an Idempotency-Key, the session's transaction is open (the key was looked up), so
    # the insert and the stored response commit together.
    message = await service.send_in_session(session, scope, chat_id, fields)
    return await idempotency.remember(session, 202, MessageOut.of(message))


@router.post(
    "/profiles/{profile_id}/messages",
    response_model=MessageOut,
    status_code=202,
    operation_id="messages_send_to_recipient",
    summary="Send a message to a participant, in their chat (found or created)",
)
async def send_to_recipient(
    profile_id: str,
    fields: RecipientMessageSend,
    request: Request,
    scope: CurrentScope,
    session: Session,
    idempotency: Idempotency,
) -> Response:
    """One request for a workflow step: the profile's chat with `recipient_id` is found or
    created, then the message is accepted in it, `pending` until a worker hands it to Meta."""
    await attach_media(request.app.state.media, fields)
    message = await service.send_to_recipient(session, scope, profile_id, fields)
    return await idempotency.remember(session, 202, MessageOut.of(message))


@router.post(
    "/messages/{message_id}/retry",
    response_model=MessageOut,
    status_code=202,
    operation_id="messages_retry",
    summary="Send a failed message again",
)
async def retry_message(
    message_id: str, scope: CurrentScope, session: Session, idempotency: Idempotency
) -> Response:
    """Send a failed message again: it is `pending` until a worker hands it to Meta."""
    message = await service.retry(session, scope, message_id)
    return await idempotency.remember(session, 202, MessageOut.of(message))


@router.get(
    "/messages/{message_id}",
    response_model=MessageOut,
    operation_id="messages_get",
    summary="Get a message by its id or Meta's mid",
)
async def get_message(message_id: str, scope: CurrentScope, session: Session) -> MessageOut:
    return MessageOut.of(await service.get_message(session, scope, message_id))
